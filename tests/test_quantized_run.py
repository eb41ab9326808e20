"""The whole loop with +int8 states: profile -> solve (with and without) -> run -> verify, on tiny-bert."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.errors import InfeasibleError
from budgetplan.profile.io import write_profile
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.profile.types import is_quantized, without_quantized
from budgetplan.solve import solve_device
from fl_helpers import tiny_bert
from solve_helpers import all_configs
from test_recompute_run import SMALL, device_file

runner = CliRunner()


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory):
    profile = profile_model(tiny_bert(), ProfileRequest(batch_size=4, seq_len=16, lora_ranks=(4,), recompute=False,
                                                        measure_configs=False))
    path = tmp_path_factory.mktemp("int8") / "profile.json"
    write_profile(profile, path)
    return profile, path


def objective(profile, memory: int) -> float:
    from budgetplan.devices import load_device
    from dataclasses import replace

    target = replace(load_device("jetson-nano"), memory_bytes=memory, total_memory_bytes=memory)
    try:
        return solve_device(profile, target, "layers").objective_value
    except InfeasibleError:
        return -1.0


def test_memory_bound_class_trains_more_with_int8_and_verify_passes(profile_file, tmp_path):
    profile, path = profile_file
    peaks = sorted({c.peak_bytes_predicted for states, _, c in all_configs(profile)
                    if any(is_quantized(s) for s in states)})
    # the first budget (a quantised configuration's peak) at which plans without int8 fit, and int8 plans reach more
    memory = next(m for m in peaks if objective(profile, m) > objective(without_quantized(profile), m) >= 0)
    device = device_file(tmp_path, memory)
    plan_path = tmp_path / "plan.json"
    result = runner.invoke(app, ["solve", "--profile", str(path), "--device-file", str(device), "--json", str(plan_path)])
    assert result.exit_code == 0, result.output
    entry = json.loads(plan_path.read_text())["classes"]["tight"]
    plain = runner.invoke(app, ["solve", "--profile", str(path), "--device-file", str(device), "--no-quantized"])
    assert entry["quantized"]["blocks"] and any(is_quantized(s) for s in entry["block_states"])
    assert plain.exit_code == 0 and "int8" not in plain.output, plain.output

    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(plan_path), "--data", "drugreview", *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    verified = runner.invoke(app, ["verify", str(out), "--json"])
    assert verified.exit_code == 0, verified.output
    check = json.loads(verified.output)["classes"][0]
    assert check["status"] == "PASS", check["reasons"]
    assert check["measured_flops"] == check["predicted_flops"]  # the dequantisations are in both
    assert abs(check["peak_error"]) <= 0.03


def test_flower_engine_trains_int8_classes_like_the_embedded_one(tmp_path):
    """A device gets full-precision global weights, quantises the blocks its class holds in int8 and uploads what
    it trains; both engines run that same client code and end with the same global weights."""
    pytest.importorskip("flwr")
    import torch

    from fl_helpers import class_plan, tiny_plan

    plan = tiny_plan(class_plan("int8-lora", 0.5, ("frozen+int8", "frozen+int8", "lora-4+int8", "lora-4"),
                                int8_embeddings=True),
                     class_plan("int8-last", 0.5, ("frozen+int8", "frozen+int8", "frozen+int8", "trained")))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_dict()))
    small = ["--data", "drugreview", "--rounds", "1", "--clients", "2", "--clients-per-round", "2", "--local-steps",
             "1", "--max-train", "40", "--max-test", "8", "--seq-len", "16", "--no-measure"]
    runs = {}
    for name in ("embedded", "flower"):
        result = runner.invoke(app, ["run", str(path), *small, "--engine", name, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        runs[name] = torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["global_state"]
    assert set(runs["embedded"]) == set(runs["flower"])
    assert all(runs["embedded"][k].dtype == torch.float32 for k in runs["embedded"])  # the global model stays fp32
    for key in runs["embedded"]:
        assert torch.allclose(runs["embedded"][key], runs["flower"][key], rtol=0, atol=1e-6), key
