"""The study's trained runs as an MLflow model: the four sequences of a patient in, P(mutant) out.

The final evaluation's bundle (``winner_models``) and the fallbacks for patients missing
sequences (``fallback_models``) travel as the model's artifacts; prediction is
:func:`idh_pseudocolor.predict.predict_subjects`, so a registered model answers exactly as
``idh-pseudocolor predict`` does with the same bundles. Loading it needs this package installed.
"""

from __future__ import annotations

import os
from typing import Any

import mlflow.pyfunc
import pandas as pd

from idh_pseudocolor.cohort import FILE_KEYS
from idh_pseudocolor.tracking import REGISTERED_MODEL

#: input columns: an id and a NIfTI path per sequence and the tumor mask (empty: absent sequence)
INPUT_COLUMNS = ("subject_id", *FILE_KEYS)
OUTPUT_COLUMNS = (
    "subject_id",
    "model_name",
    "pretrained",
    "configuration",
    "prob_mutant",
    "prob_std_over_seeds",
    "prediction",
    "missing_sequences",
    "error",
)


def signature():
    """Every file column optional but the id: a patient may miss sequences (fallbacks)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema(
        [ColSpec("string", "subject_id")]
        + [ColSpec("string", key, required=False) for key in FILE_KEYS]
    )
    return ModelSignature(inputs=inputs)


class PseudocolorModel(mlflow.pyfunc.PythonModel):
    """P(IDH mutant) per patient and (model, arm): the seed ensemble of the winner's runs, or of
    the best-ranked fallback configuration the patient's sequences allow."""

    def load_context(self, context) -> None:
        from idh_pseudocolor.predict import bundle_runs

        fallback = context.artifacts.get("fallback_models")
        self.runs = bundle_runs(context.artifacts["winner_models"], fallback)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        from idh_pseudocolor.predict import predict_subjects

        subjects = []
        for row in model_input.to_dict("records"):
            # a column left empty is an absent file: a channel the chosen configuration does not
            # use (predict's rule); a path that does not exist is reported as such
            files = {
                key: row[key] if isinstance(row.get(key), str) and row[key] else f"<no {key}>"
                for key in FILE_KEYS
            }
            subjects.append((str(row["subject_id"]), files))
        table, _, errors = predict_subjects(subjects, self.runs)
        failed = pd.DataFrame(
            [{"subject_id": e.subject_id, "error": str(e)} for e in errors],
            columns=["subject_id", "error"],
        )
        out = pd.concat([table, failed], ignore_index=True) if len(failed) else table
        for column in OUTPUT_COLUMNS:
            if column not in out:
                out[column] = None
        return out[list(OUTPUT_COLUMNS)]


def register_model(
    run_id: str, winner_models: str | os.PathLike, fallback_models: str | os.PathLike | None
) -> str:
    """The final evaluation's runs (and the fallbacks) as a pyfunc model of ``run_id``, registered
    as :data:`REGISTERED_MODEL`; returns ``models:/<name>/<version>``."""
    import mlflow

    from idh_pseudocolor import __version__

    artifacts = {"winner_models": str(winner_models)}
    if fallback_models is not None:
        artifacts["fallback_models"] = str(fallback_models)
    active = mlflow.active_run()
    if active is None or active.info.run_id != run_id:
        raise RuntimeError(f"register_model: run {run_id} is not this thread's active run")
    requirements = [f"{name}=={version}" for name, version in _requirements().items()]
    info = mlflow.pyfunc.log_model(
        name="winner",
        python_model=PseudocolorModel(),
        artifacts=artifacts,
        signature=signature(),
        pip_requirements=[f"idh_pseudocolor=={__version__}", *requirements],
        registered_model_name=REGISTERED_MODEL,
    )
    return f"models:/{REGISTERED_MODEL}/{info.registered_model_version}"


def _requirements() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "timm", "safetensors", "mlflow")}
