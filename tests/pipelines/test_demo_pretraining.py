"""demo_pretraining through a real Kedro session and the catalog: weights files and their record."""

from __future__ import annotations

import json

import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from idh_pseudocolor.models import create_model, is_demo_weights

TINY = {
    "demo_pretraining": {
        "image_size": 32,
        "photo_size": 64,
        "steps": 3,
        "batch_size": 8,
        "heldout_crops": 16,
        "torch_threads": 1,
    }
}


def run(project, **runtime_params) -> dict:
    """Run the pipeline, then load its output through the project's catalog."""
    bootstrap_project(project)
    with KedroSession.create(
        project_path=project, runtime_params=runtime_params or None
    ) as session:
        session.run(pipeline_names=["demo_pretraining"])
        return session.load_context().catalog.load("demo_pretrained_weights")


def test_pipeline_writes_demo_weights_then_an_empty_record_when_disabled(kedro_project):
    (kedro_project / "conf/local/parameters.yml").write_text(yaml.safe_dump(TINY))
    folder = kedro_project / "data/06_models/demo_pretraining"
    loaded = run(kedro_project)
    files, record = loaded["files"], loaded["record"]
    assert files == {m: str(folder / f"{m}.safetensors") for m in ("test_resnet", "test_byobnet")}
    assert all(is_demo_weights(f) for f in files.values())
    assert (
        record["enabled"] and record["photographs"] == 15 and len(record["photograph_names"]) == 15
    )
    assert record["description"] == "demo pretraining on 15 photographs, not ImageNet"
    # conf/local reached the node
    assert record["settings"]["steps"] == 3 and record["settings"]["image_size"] == 32
    for name in files:
        result = record["models"][name]
        assert (
            0 <= result["heldout_accuracy"] <= 1
            and result["chance"] == round(1 / 15, 4)
            and result["seconds"] > 0
        )
    on_disk = json.loads((folder / "demo_pretraining.json").read_text())
    # relative: the folder can move
    assert on_disk["files"] == {m: f"{m}.safetensors" for m in files}
    _, info = create_model(
        "test_byobnet", pretrained=True, weights_file=files["test_byobnet"], in_chans=3
    )
    assert info.pretrained_loaded and info.source == f"demo-pretraining:{files['test_byobnet']}"

    # the paper's environments: disabled, the same pipeline writes an empty record and no weights
    assert run(kedro_project, demo_pretraining={"enabled": False}) == {
        "files": {},
        "record": {"enabled": False},
    }
    # no stale weights left
    assert sorted(p.name for p in folder.iterdir()) == ["demo_pretraining.json"]
