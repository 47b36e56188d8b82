"""The command line's defaults come from the project's conf, never from numbers of its own."""

from __future__ import annotations

import click
import pytest

from idh_pseudocolor.cli import _reporting_settings
from idh_pseudocolor.parameters import ReportingSettings
from tests.conftest import REPO, project_parameters


def test_predict_labels_reports_with_the_projects_reporting_settings(monkeypatch, tmp_path):
    conf = ReportingSettings.from_params(project_parameters(REPO)["reporting"])
    monkeypatch.chdir(REPO)
    assert _reporting_settings(None, None, None, None) == (
        conf.bootstrap_resamples,
        conf.seed,
        conf.calibration_bins,
    )
    assert _reporting_settings(None, 300, None, 3) == (300, conf.seed, 3)  # options win
    monkeypatch.chdir(tmp_path)  # outside the project: only complete options will do
    assert _reporting_settings(None, 300, 1, 3) == (300, 1, 3)
    with pytest.raises(click.UsageError, match="--bootstrap-resamples, --bootstrap-seed"):
        _reporting_settings(None, 300, None, 3)
