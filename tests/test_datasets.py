from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError, Version

from idh_pseudocolor.datasets import CohortDataset, NpzDataset


def test_npz_round_trip(tmp_path):
    data = {
        "images": np.random.default_rng(0).random((3, 4, 5, 6), dtype=np.float32),
        "ids": np.array(["a", "bb", "c"]),
    }
    ds = NpzDataset(str(tmp_path / "sub" / "arrays.npz"))
    assert not ds.exists()
    ds.save(data)
    assert ds.exists()
    loaded = ds.load()
    np.testing.assert_array_equal(loaded["images"], data["images"])
    assert loaded["ids"].tolist() == ["a", "bb", "c"]


def test_npz_versioned_and_refuses_pickled_objects(tmp_path):
    ds = NpzDataset(str(tmp_path / "arrays.npz"), version=Version(None, None))
    ds.save({"x": np.arange(3)})
    assert ds.load()["x"].tolist() == [0, 1, 2]
    with pytest.raises(DatasetError):
        ds.save({"x": [1, 2]})  # type: ignore[dict-item]
    unsafe = NpzDataset(str(tmp_path / "unsafe.npz"))
    unsafe.save({"x": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(DatasetError, match="allow_pickle"):
        unsafe.load()


def test_cohort_dataset_is_read_only(tiny_cohort):
    ds = CohortDataset(path=str(tiny_cohort))
    assert ds.exists() and len(ds.load()) == 24
    with pytest.raises(DatasetError, match="read-only"):
        ds.save(pd.DataFrame())


def test_model_bundle_round_trip_and_half_written_counts_as_missing(tmp_path):
    import torch

    from idh_pseudocolor.datasets import ModelBundleDataset
    from idh_pseudocolor.models import create_model

    model, _ = create_model("test_resnet", pretrained=False)
    bundle = {
        "run_a": {
            "state_dict": model.state_dict(),
            "meta": {"config": {"model_name": "test_resnet", "seed": 1}},
        },
        "run_b": {"state_dict": None, "meta": {"note": "weights not kept"}},
    }
    ds = ModelBundleDataset(path=str(tmp_path / "bundle"))
    assert not ds.exists()
    ds.save(bundle)
    assert ds.exists()
    loaded = ds.load()
    assert (
        loaded["run_a"]["meta"] == bundle["run_a"]["meta"] and loaded["run_b"]["state_dict"] is None
    )
    fresh, _ = create_model("test_resnet", pretrained=False)
    fresh.load_state_dict(loaded["run_a"]["state_dict"])  # strict
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in model.state_dict().items())
    (tmp_path / "bundle/manifest.json").unlink()  # as after a crash between weights and manifest
    assert not ds.exists()
    with pytest.raises(DatasetError, match="manifest.json missing"):
        ds.load()


def test_a_folder_of_bundles_loads_as_their_union(tmp_path):
    """The fallback nodes each write a part of one bundle (slot_1 .. slot_3, ``part: k/3``): the
    folder loads as their union, weights read from the parts (nothing copied), and only when all
    parts are complete; a bundle an older layout left at the top goes when a part is saved, and
    weights a smaller bundle no longer names go when it is saved."""
    import torch

    from idh_pseudocolor.datasets import ModelBundleDataset

    def entry(value: float) -> dict:
        return {"state_dict": {"w": torch.full((2,), value)}, "meta": {"value": value}}

    root = tmp_path / "fallback_models"
    whole = ModelBundleDataset(path=str(root))
    ModelBundleDataset(path=str(root)).save({"old": entry(0.0)})  # the one-node layout
    assert (root / "old.safetensors").is_file()

    def part(k: int) -> ModelBundleDataset:
        return ModelBundleDataset(path=str(root / f"slot_{k}"), part=f"{k}/3")

    part(1).save({"run_a": entry(1.0)})
    assert not (root / "manifest.json").exists() and not (root / "old.safetensors").exists()
    part(2).save({"run_b": entry(2.0), "run_c": entry(3.0)})
    # slot_3 has not run: the folder is not a bundle yet, and says what is missing
    assert not whole.exists()
    with pytest.raises(DatasetError, match=r"incomplete: its parts are slot_1 \(1/3\), slot_2"):
        whole.load()
    part(3).save({})  # a node with nothing to train
    assert whole.exists()
    loaded = whole.load()
    assert sorted(loaded) == ["run_a", "run_b", "run_c"]
    assert torch.equal(loaded["run_c"]["state_dict"]["w"], torch.full((2,), 3.0))
    assert loaded["run_b"]["meta"] == {"value": 2.0}
    part(2).save({"run_b": entry(2.0)})  # smaller now: run_c's weights go
    assert sorted(p.name for p in (root / "slot_2").iterdir()) == [
        "manifest.json",
        "run_b.safetensors",
    ]
    (root / "slot_2/manifest.json").unlink()  # slot_2 crashed mid-save
    with pytest.raises(DatasetError, match=r"slot_2 has no manifest.json \(half-written\)"):
        whole.load()
    part(2).save({"run_a": entry(4.0)})
    with pytest.raises(DatasetError, match=r"run_a in more than one of its parts"):
        whole.load()
    with pytest.raises(DatasetError, match=r"part must be 'k/n'"):
        ModelBundleDataset(path=str(root / "slot_4"), part="4/3")


def test_the_fallback_parts_in_the_catalog_match_the_pipelines_slots():
    """catalog.yml's ``part: "{slot}/3"`` and the pipeline's FALLBACK_SLOTS say the same count."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from idh_pseudocolor.pipelines.permutation_study.pipeline import (
        FALLBACK_SLOTS,
        fallback_namespace,
    )
    from tests.conftest import REPO

    bootstrap_project(REPO)
    with KedroSession.create(project_path=REPO) as session:
        catalog = session.load_context().catalog
        parts = [
            catalog.get(f"{fallback_namespace(slot)}.models")._describe()["part"]
            for slot in range(FALLBACK_SLOTS)
        ]
    assert parts == [f"{k}/{FALLBACK_SLOTS}" for k in range(1, FALLBACK_SLOTS + 1)]


@pytest.mark.parametrize("password", ["secret", "p@ss:w/rd#1%", "a b?c&d=e"])
def test_storage_url_shows_no_password(password):
    """The URL in messages and in the catalog's description: the password (any characters,
    percent-encoded as SQLAlchemy expects) becomes ***, everything else stays, query included."""
    from urllib.parse import quote_plus

    from idh_pseudocolor.datasets.optuna_dataset import masked_url

    url = f"postgresql+psycopg://alice:{quote_plus(password)}@db.example:5432/optuna?application_name=w@1"
    masked = masked_url(url)
    assert masked == "postgresql+psycopg://alice:***@db.example:5432/optuna?application_name=w%401"
    assert quote_plus(password) not in masked and password not in masked
    for plain in (
        "sqlite:///data/06_models/search.db",
        "journal:/shared/search.log",
        "postgresql://alice@db/optuna",
    ):
        assert masked_url(plain) == plain  # nothing to hide


def test_sqlite_study_location_names_its_file(tmp_path):
    from idh_pseudocolor.datasets import OptunaStorageDataset

    location = OptunaStorageDataset("s", filepath=str(tmp_path / "db" / "search.db")).load()
    assert location.url == f"sqlite:///{tmp_path}/db/search.db" and location.study_name == "s"


def test_a_plain_catalog_load_imports_neither_torch_nor_lightning():
    """``kedro catalog``, ``kedro viz`` and a notebook reading one table build the catalog: every
    dataset of conf/base is created (in a fresh interpreter) without importing torch, Lightning or
    timm, which only saving or loading weights needs."""
    import subprocess
    import sys

    from tests.conftest import REPO

    code = (
        "import sys\n"
        "from kedro.io import DataCatalog\n"
        "from idh_pseudocolor.config_loader import LOADER_ARGS, LayeredConfigLoader\n"
        "catalog = DataCatalog.from_config(LayeredConfigLoader('conf', **LOADER_ARGS)['catalog'])\n"
        "types = {type(catalog.get(name)).__name__ for name in catalog.keys()}\n"
        "print(sorted(types))\n"
        "print([m for m in ('torch', 'pytorch_lightning', 'timm') if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    types, heavy = done.stdout.strip().splitlines()[-2:]
    assert "ModelBundleDataset" in types and "WeightsFolderDataset" in types
    assert "OptunaStorageDataset" in types and "CohortDataset" in types
    assert heavy == "[]"


@contextmanager
def new_database(postgres_url: str, prefix: str) -> Iterator[Any]:
    """A database of its own on the test server (SQLAlchemy URL), dropped afterwards, so a kept
    server ($IDH_TEST_POSTGRES_URL) collects nothing."""
    import uuid

    import psycopg
    from sqlalchemy import make_url

    base = make_url(postgres_url)
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    try:
        yield base.set(database=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_workers_starting_together_on_a_new_postgresql_database_all_get_the_study(postgres_url):
    """Search workers launched at once (the A4000 box and the L4 cluster) against a database that
    has no Optuna tables yet all open the storage: the schema is made once, nobody fails with
    'relation "studies" already exists'. Real PostgreSQL; several fresh databases, since the race
    is a matter of timing."""
    import threading

    import optuna

    from idh_pseudocolor.datasets import OptunaStorageDataset

    n_workers = 6
    for _ in range(3):
        with new_database(postgres_url, "race") as database:
            url = database.render_as_string(hide_password=False)
            barrier = threading.Barrier(n_workers)
            errors: list[BaseException] = []
            locations = []

            def open_storage(url=url, barrier=barrier, errors=errors, locations=locations):
                barrier.wait()
                try:
                    locations.append(
                        OptunaStorageDataset("shared", credentials={"con": url}).load()
                    )
                except BaseException as error:  # noqa: BLE001 - reported below
                    errors.append(error)

            threads = [threading.Thread(target=open_storage) for _ in range(n_workers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            try:
                assert not errors, errors
                assert len(locations) == n_workers
                study = optuna.create_study(
                    study_name="shared", storage=locations[0].storage, load_if_exists=True
                )
                study.enqueue_trial({"x": 1.0})
                again = optuna.load_study(study_name="shared", storage=locations[-1].storage)
                assert len(again.trials) == 1
            finally:
                for location in locations:
                    location.storage.remove_session()
                    location.storage.engine.dispose()


def test_opening_a_postgresql_storage_waits_for_the_schema_lock(postgres_url):
    """The lock that makes the race above impossible, observed: while another session holds it
    (as a worker making Optuna's tables does), opening the storage waits; once released it
    opens and finds the study's tables."""
    import threading

    import psycopg

    from idh_pseudocolor.datasets import OptunaStorageDataset
    from idh_pseudocolor.datasets.optuna_dataset import SCHEMA_LOCK_KEY

    with new_database(postgres_url, "lock") as url:
        plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
        opened = []
        with psycopg.connect(plain) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK_KEY,))
            worker = threading.Thread(
                target=lambda: opened.append(
                    OptunaStorageDataset(
                        "s", credentials={"con": url.render_as_string(hide_password=False)}
                    ).load()
                )
            )
            worker.start()
            worker.join(timeout=2.0)
            assert worker.is_alive() and not opened  # waiting for the lock, tables not touched
            tables = holder.execute(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'studies'"
            ).fetchone()[0]
            assert tables == 0
            holder.commit()  # the transaction-scoped lock goes with the transaction
        worker.join(timeout=60)
        assert not worker.is_alive() and len(opened) == 1
        opened[0].storage.engine.dispose()
        with psycopg.connect(plain) as check:
            assert check.execute("SELECT count(*) FROM studies").fetchone()[0] == 0  # made, empty
