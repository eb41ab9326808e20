"""`budgetplan profile` end to end, and its one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.models import load_model, save_model_file
from budgetplan.profile.io import read_profile
from cli_helpers import assert_one_line_error

runner = CliRunner()
SMALL = ["--batch-size", "2", "--seq-len", "8", "--lora-ranks", "4"]


def test_profile_prints_table_and_writes_versioned_json(tmp_path):
    out = tmp_path / "profile.json"
    result = runner.invoke(app, ["profile", "tiny-bert", *SMALL, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "head only" in result.output and "lora-4 on all blocks" in result.output
    data = json.loads(out.read_text())
    assert data["schema_version"].startswith("1.")
    assert data["model"]["num_blocks"] == 4 and data["model"]["fingerprint"].startswith("sha256:")
    assert data["context"]["batch_size"] == 2 and data["context"]["seq_len"] == 8
    assert set(data["blocks"][0]["states"]) == {"frozen_outside", "frozen_in_path", "trained", "lora-4",
                                                "trained+recompute", "lora-4+recompute", "frozen_outside+int8",
                                                "frozen_in_path+int8", "lora-4+int8", "lora-4+int8+recompute"}
    config = data["configs"][-1]
    for field in ("block_states", "flops_forward", "flops_backward", "activation_bytes", "peak_bytes_predicted",
                  "peak_bytes_measured", "trainable_params", "upload_bytes"):
        assert field in config
    assert all(c["peak_bytes_measured"] > 0 for c in data["configs"])
    assert read_profile(out).model.fingerprint == load_model("tiny-bert").fingerprint


def test_profile_without_measuring_leaves_measured_peak_null(tmp_path):
    out = tmp_path / "p.json"
    result = runner.invoke(app, ["profile", "tiny-vit", "--batch-size", "2", "--lora-ranks", "", "--no-measure",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert all(c["peak_bytes_measured"] is None for c in json.loads(out.read_text())["configs"])


def test_profile_no_recompute_measures_the_plain_states_only(tmp_path):
    out = tmp_path / "p.json"
    result = runner.invoke(app, ["profile", "tiny-bert", *SMALL, "--no-recompute", "--no-quantized", "--no-measure",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert set(data["blocks"][0]["states"]) == {"frozen_outside", "frozen_in_path", "trained", "lora-4"}
    assert set(data["pre"]) == {"frozen_outside", "trained"}


def test_missing_file(tmp_path):
    assert_one_line_error(runner.invoke(app, ["profile", str(tmp_path / "none.pt")]), "not found")


def test_corrupt_file(tmp_path):
    good = tmp_path / "m.pt"
    save_model_file(load_model("tiny-bert"), good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    assert_one_line_error(runner.invoke(app, ["profile", str(bad)]), "corrupt")


def test_pickle_without_trust(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(load_model("tiny-bert").model.base, path)
    assert_one_line_error(runner.invoke(app, ["profile", str(path)]), "--trust-pickle")


def test_model_without_block_stack(tmp_path):
    path = tmp_path / "flat.pt"
    torch.save(nn.Sequential(nn.Embedding(10, 8), nn.LayerNorm(8)), path)
    assert_one_line_error(runner.invoke(app, ["profile", str(path), "--trust-pickle"]), "--blocks")


def test_seq_len_beyond_positions():
    assert_one_line_error(runner.invoke(app, ["profile", "tiny-bert", "--seq-len", "4096"]), "positions", "--seq-len")


@pytest.mark.parametrize("args, phrase", [
    (["--optimizer", "lamb"], "optimizer"),
    (["--lora-ranks", "4,x"], "--lora-ranks"),
    (["--batch-size", "0"], "--batch-size"),
])
def test_bad_options(args, phrase):
    assert_one_line_error(runner.invoke(app, ["profile", "tiny-bert", *args]), phrase)
