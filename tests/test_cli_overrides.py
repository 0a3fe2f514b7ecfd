"""XCP-D-style command-line overrides: --fd-thresh, --nuisance-regressors/-p, --min-time, --smoothing."""

from __future__ import annotations

import json

import pytest
import yaml

from ketflow.cli.parser import build_parser, config_overrides
from ketflow.config import ConfigError, Denoising, Override, load_config

from conftest import TINY_CONFIG, run_cli


def _overrides(*argv):
    return config_overrides(build_parser().parse_args(["/", "/out", "participant", *argv]))


def test_options_set_their_fields_and_are_recorded():
    config = load_config(None, _overrides("--fd-thresh", "0.3", "-p", "24P", "--min-time", "120", "--smoothing",
                                          "4"))
    assert config.denoising.fd_threshold == 0.3 and config.denoising.strategy == "24P"
    assert config.denoising.min_time_s == 120 and config.group.voxelwise.smoothing_fwhm == 4
    recorded = json.loads(config.to_json())["command_line_overrides"]
    assert recorded == {"--fd-thresh": {"denoising.fd_threshold": 0.3},
                        "--nuisance-regressors": {"denoising.strategy": "24P"},
                        "--min-time": {"denoising.min_time_s": 120.0},
                        "--smoothing": {"group.voxelwise.smoothing_fwhm": 4.0}}
    # 0 switches FD censoring and the time criterion off, as in XCP-D
    off = load_config(None, _overrides("--fd-thresh", "0", "--min-time", "0"))
    assert off.denoising.fd_threshold is None and off.denoising.min_time_s is None
    assert load_config(None).command_line_overrides == {}


def test_min_time_is_converted_with_each_runs_repetition_time():
    assert Denoising(min_volumes=30, min_time_s=120).required_volumes(2.0) == 60
    assert Denoising(min_volumes=30, min_time_s=120).required_volumes(0.8) == 150
    assert Denoising(min_volumes=30, min_time_s=10).required_volumes(2.0) == 30  # min_volumes still holds
    assert Denoising(min_volumes=30).required_volumes(2.0) == 30


def test_a_strategy_file_sets_denoising_fields(tmp_path):
    strategy = tmp_path / "strategy.yml"
    strategy.write_text("strategy: aCompCor\nmin_contiguous: 3\n")
    config = load_config(None, _overrides("--nuisance-regressors", str(strategy)))
    assert config.denoising.strategy == "aCompCor" and config.denoising.min_contiguous == 3
    strategy.write_text("strategy: 36P\ncompcor: 5\n")
    with pytest.raises(ValueError, match=r"strategy.yml: \['compcor'\] are not denoising fields"):
        _overrides("-p", str(strategy))
    with pytest.raises(ValueError, match="neither a packaged strategy"):
        _overrides("-p", "9P")


def test_an_override_contradicting_the_config_file_is_refused():
    with pytest.raises(ConfigError, match=r"tiny_config.yml: denoising.fd_threshold is 0.5 in this file but "
                                          r"--fd-thresh sets it to 0.3"):
        load_config(TINY_CONFIG, [Override("--fd-thresh", "denoising.fd_threshold", 0.3)])
    same = load_config(TINY_CONFIG, [Override("--fd-thresh", "denoising.fd_threshold", 0.5)])  # agrees: fine
    assert same.command_line_overrides == {"--fd-thresh": {"denoising.fd_threshold": 0.5}}
    unset = load_config(TINY_CONFIG, [Override("--min-time", "denoising.min_time_s", 60.0)])  # not in the file
    assert unset.denoising.min_time_s == 60


def test_command_line_records_overrides_in_the_methods_and_refuses_contradictions(tiny_bids, tmp_path):
    out = tmp_path / "out"
    raw = yaml.safe_load(TINY_CONFIG.read_text())
    del raw["denoising"]["strategy"]  # the tiny dataset's configuration, without a strategy
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(raw))
    proc = run_cli(tiny_bids, out, "participant", "--boilerplate-only", "--skip-bids-validation", "-p", "24P",
                   "--min-time", "100", "--config", config)
    assert proc.returncode == 0, proc.stderr
    text = (out / "logs" / "CITATION.md").read_text()
    assert "--nuisance-regressors set denoising.strategy = '24P'" in text
    assert "--min-time set denoising.min_time_s = 100.0" in text and "(or 100 s of data)" in text
    refused = run_cli(tiny_bids, tmp_path / "out2", "participant", "--boilerplate-only", "--skip-bids-validation",
                      "--config", TINY_CONFIG, "--fd-thresh", "0.9")
    assert refused.returncode == 2
    assert "tiny_config.yml: denoising.fd_threshold is 0.5 in this file but --fd-thresh sets it to 0.9" in (
        refused.stderr)
