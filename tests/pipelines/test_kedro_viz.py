"""kedro-viz: every dataset has a layer, `kedro viz build` makes a static site, and that site
renders the pipelines in a real headless Chromium."""

from __future__ import annotations

import functools
import http.server
import os
import re
import subprocess
import sys
import threading

import yaml

from tests.browser import visit
from tests.conftest import REPO

LAYERS = ["raw", "intermediate", "primary", "model_input", "model_output", "models", "reporting"]


def test_every_catalog_entry_has_a_known_layer():
    catalog = yaml.safe_load((REPO / "conf/base/catalog.yml").read_text())
    missing = {
        name
        for name, entry in catalog.items()
        if entry.get("metadata", {}).get("kedro-viz", {}).get("layer") not in LAYERS
    }
    assert missing == set()


def test_viz_build_renders_layers_and_collapsed_configurations(kedro_project, tmp_path):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build"],
        cwd=kedro_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    site = kedro_project / "build"
    assert (site / "index.html").is_file() and (site / "api/main").is_file()

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}/"
        shot = tmp_path / "kedro_viz.png"
        page = visit(
            base,
            shot,
            wait_for=".pipeline-node",
            evaluate={
                "layers": (
                    "Array.from(document.querySelectorAll('.pipeline-layer-name'))"
                    ".map(e => e.textContent)"
                ),
                "names": (
                    "Array.from(document.querySelectorAll('.pipeline-node__text'))"
                    ".map(e => e.textContent)"
                ),
            },
        )
        study = visit(
            base + "?pid=permutation_study",
            tmp_path / "permutation_study.png",
            wait_for=".pipeline-node",
            evaluate={
                "names": (
                    "Array.from(document.querySelectorAll('.pipeline-node__text'))"
                    ".map(e => e.textContent)"
                )
            },
        )
    finally:
        server.shutdown()
    # Every console error fails the test except three that a static build served offline always
    # gives, each named: kedro-viz's web font (tests/browser.py refuses requests off the machine)
    # and the /api/metadata endpoint that `kedro viz build` does not write (the 404 and the app's
    # note that it got HTML).
    expected = {
        "console: Failed to load resource: net::ERR_INTERNET_DISCONNECTED",
        "console: Failed to load resource: the server "
        "responded with a status of 404 (File not found)",
        "console: metadata fetch error:  SyntaxError: "
        "Unexpected token '<', \"<!DOCTYPE \"... is not valid JSON",
    }
    for visited in (page, study):
        assert set(visited.errors) <= expected, visited.errors
        assert all(
            url.startswith("https://fonts.googleapis.com/") for url in visited.failed_requests
        )
    assert page.checks["layers"] == LAYERS
    names = set(page.checks["names"])
    assert {
        "extract_slices",
        "search_hyperparameters",
        "evaluate_winner_on_test",
        "build_report",
        "report",
    } <= names
    # the 28 configurations are collapsed namespaces, not 28 expanded copies of the training node
    # (the namespaces' own boxes; their datasets, e.g. configuration_27.validation_runs, aside)
    shown = [name for name in study.checks["names"] if re.fullmatch(r"configuration_\d+", name)]
    assert set(shown) == {f"configuration_{c:02d}" for c in range(28)}
    numeric = sorted(shown, key=lambda name: int(name.removeprefix("configuration_")))
    assert sorted(shown) == numeric  # text order is numeric order
    assert "train_configuration" not in set(study.checks["names"])
    assert shot.stat().st_size > 30_000
