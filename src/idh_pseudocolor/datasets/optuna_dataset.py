"""``OptunaStorageDataset``: where an Optuna study lives, as a catalog entry.

kedro-datasets' experimental ``optuna.StudyDataset`` copies whole studies on save and has no
heartbeat or journal support; a resumable, multi-worker search needs the storage itself
(trials are written as they finish), so this dataset hands the node a configured storage.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from kedro.io import AbstractDataset, DatasetError
from kedro.io.core import get_protocol_and_path


@dataclass(frozen=True)
class StudyLocation:
    """A storage and the study name inside it; the search creates or resumes the study there."""

    storage: optuna.storages.BaseStorage
    study_name: str
    url: str  # for messages and optuna-dashboard, with any password masked


class OptunaStorageDataset(AbstractDataset[None, StudyLocation]):
    """Loads a :class:`StudyLocation` for SQLite (default), any SQLAlchemy URL or a journal file.

    Example::

        search_study:
          type: idh_pseudocolor.datasets.OptunaStorageDataset
          filepath: data/06_models/search.db      # SQLite, relative to the project
          study_name: idh_search
        # PostgreSQL, URL from conf/local/credentials.yml
        # (optuna_db: {con: postgresql+psycopg://...})
        # or from the environment (con: ${oc.env:OPTUNA_STORAGE}):
        #   credentials: optuna_db
        # journal file (NFS-friendly): storage: journal, filepath: /shared/search.log

    RDB storages get a heartbeat, so a trial left RUNNING by a killed worker is marked FAILED
    once ``grace_period`` seconds pass without a beat.
    """

    def __init__(
        self,
        study_name: str,
        filepath: str | None = None,
        storage: str | None = None,
        credentials: dict[str, Any] | None = None,
        heartbeat_interval: int = 60,
        grace_period: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._study_name = study_name
        self._filepath = filepath
        self._storage = (credentials or {}).get("con") or storage
        self._heartbeat = heartbeat_interval
        self._grace = grace_period
        self.metadata = metadata
        if not (self._filepath or self._storage):
            raise DatasetError(
                "OptunaStorageDataset needs 'filepath' (SQLite / journal) or a storage URL"
            )
        protocol = (
            get_protocol_and_path(self._filepath)[0]
            if self._filepath and self._storage in (None, "journal")
            else "file"
        )
        if protocol != "file":
            kind = "A journal file" if self._storage == "journal" else "An SQLite study"
            raise DatasetError(
                f"{kind} cannot live at {self._filepath}: Optuna opens it as a local file, "
                f"and {protocol}:// is not one. With a data_root on object storage, "
                "share the study through PostgreSQL instead (search_study: credentials: optuna_db, "
                "and optuna_db: {con: postgresql+psycopg://...} in conf/local/credentials.yml; "
                "docs/scaling.md), or set search_study.filepath to a local or NFS path."
            )

    def _url(self) -> str:
        if self._storage and self._storage != "journal":
            return self._storage
        path = Path(self._filepath or "")
        return f"journal:{path}" if self._storage == "journal" else f"sqlite:///{path}"

    def load(self) -> StudyLocation:
        url = self._url()
        if url.startswith("journal:"):
            path = Path(url.removeprefix("journal:"))
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
            storage: optuna.storages.BaseStorage = optuna.storages.JournalStorage(backend)
        else:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            storage = _rdb_storage(url, self._heartbeat, self._grace)
        return StudyLocation(storage=storage, study_name=self._study_name, url=masked_url(url))

    def save(self, data: None) -> None:
        raise DatasetError(
            "OptunaStorageDataset is read-only: trials are written by the search as they finish"
        )

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"study_name": self._study_name, "storage": masked_url(self._url())}


# One PostgreSQL advisory-lock key for "Optuna's tables are being made here"; any 64-bit integer
# no other tool of the database uses would do.
SCHEMA_LOCK_KEY = 0x1D4_05E0_C010


@contextlib.contextmanager
def _schema_lock(url: str, wait_s: float = 1.0) -> Iterator[None]:
    """Serialise opening a PostgreSQL storage across workers.

    Optuna makes its tables, version row and alembic stamp with check-then-create steps; workers
    starting together on a new database both pass the check and the loser fails ('relation
    "studies" already exists'). A transaction-scoped advisory lock lets one worker make the
    schema while the others wait, then find it made. Waiters poll with
    ``pg_try_advisory_xact_lock`` and hold no connection between tries, so the holder always
    gets the connections it needs (a connection pooler with few slots, ``max_connections``) and
    no statement or lock timeout of the role cuts a long wait short. Other databases pass
    through: the retry in :func:`_rdb_storage` covers them.
    """
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    if sqlalchemy.make_url(url).get_backend_name() != "postgresql":
        yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    try_lock = sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:key)")
    delay = 0.05
    try:
        while True:
            with engine.begin() as connection:
                if connection.execute(try_lock, {"key": SCHEMA_LOCK_KEY}).scalar():
                    yield  # the lock goes with this transaction
                    return
            time.sleep(delay)
            delay = min(2 * delay, wait_s)
    finally:
        engine.dispose()


def _rdb_storage(
    url: str, heartbeat: int, grace: int | None, attempts: int = 5
) -> optuna.storages.RDBStorage:
    """An RDB storage, opened under :func:`_schema_lock`; where no lock exists (SQLite, MySQL and
    others) the loser of the race to make Optuna's tables (a duplicate-table or unique-key
    error, 'table ... already exists') tries again and finds them made."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            with _schema_lock(url):
                return optuna.storages.RDBStorage(
                    url,
                    heartbeat_interval=heartbeat,
                    grace_period=grace,
                    engine_kwargs={"pool_pre_ping": True},
                )
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.OperationalError,
        ) as error:
            duplicate = isinstance(error, sqlalchemy.exc.IntegrityError) or (
                "already exists" in str(error.orig).lower()
            )
            if not duplicate or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def masked_url(url: str) -> str:
    """The storage URL for messages and the catalog's description, its password shown as ``***``
    (SQLAlchemy's own parsing, so percent-encoded passwords and query strings are handled); a
    journal location is not a SQLAlchemy URL and holds no password."""
    if url.startswith("journal:"):
        return url
    from sqlalchemy import make_url

    return make_url(url).render_as_string(hide_password=True)
