"""Typed run records: old run directories still load, files are byte for byte what the records write, and no
module after the plan reads a round record or a measurement by string key."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest
import torch

from budgetplan.execute import records, rounds
from budgetplan.execute.records import (DroppedClient, Measurement, RoundRecord, TrainedClient, read_rounds,
                                        rounds_line, write_measurements)
from budgetplan.execute.rundir import RunDirError, read_checkpoint
from budgetplan.verify import FAIL, PASS, verify_run
from fl_helpers import LAST_ONE, LAST_TWO, LORA_ALL, class_plan, memory_budget, tiny_config, tiny_plan

OLD_RUN = Path(__file__).parent / "data" / "old-run"  # written by the code before these types (commit 5d23926)
SRC = Path(__file__).parents[1] / "src" / "budgetplan"


def test_an_old_run_directory_loads_and_rewrites_to_the_same_bytes(tmp_path):
    text = (OLD_RUN / "rounds.jsonl").read_text()
    history = read_rounds(OLD_RUN / "rounds.jsonl")
    assert "".join(rounds_line(r) for r in history) == text
    measurements = records.measurements_from_dict(json.loads((OLD_RUN / "measurements.json").read_text()))
    write_measurements(tmp_path / "m.json", measurements)
    assert (tmp_path / "m.json").read_bytes() == (OLD_RUN / "measurements.json").read_bytes()

    first, second = history
    assert [r.round for r in history] == [1, 2] and first.sampled == (0, 1, 2, 3)
    assert first.upload_bytes == 2 * 134668 + 58124 == sum(t.upload_bytes for t in first.trained)
    assert first.dropped == (DroppedClient(0, "mid", "measured peak 1.8 MiB > memory budget 0.0 MiB"),)
    assert [d.class_name for d in second.dropped] == ["mid", "weak"]
    assert "simulated device failure" in second.dropped[1].reason
    assert first.flops_planned is None and first.engine == "embedded"
    weak = measurements["weak"]
    assert weak.peak_bytes == 1319840 and weak.source == "measured" and weak.error is None
    assert weak.flops_per_step == 18692036 + 7609661
    assert measurements["rare"].error.startswith("no client of this class") and measurements["rare"].peak_bytes is None
    # the round's measured FLOPs: each trained client's class step x 2 local steps
    per_step = {name: m.flops_per_step for name, m in measurements.items()}
    assert first.flops_measured == sum(per_step[t.class_name] * 2 for t in first.trained)


def test_verify_reads_an_old_run_directory(tmp_path):
    shutil.copytree(OLD_RUN, tmp_path / "run")
    checks = {c.name: c for c in verify_run(tmp_path / "run").checks}
    assert checks["weak"].status == PASS and checks["weak"].measured_peak_bytes == 1319840
    assert checks["weak"].measured_flops == 18692036 + 7609661
    assert checks["mid"].status == FAIL and "memory budget" in checks["mid"].reasons[0]
    assert checks["rare"].status == FAIL and checks["rare"].reasons[0].startswith("no client of this class")


def test_an_old_checkpoint_loads_its_history_and_measurements(tmp_path):
    history_text = json.dumps([json.loads(line) for line in (OLD_RUN / "rounds.jsonl").read_text().splitlines()])
    torch.save({"round": 2, "global_state": {"w": torch.zeros(2)}, "history": history_text,
                "measurements": json.dumps(json.loads((OLD_RUN / "measurements.json").read_text()))},
               tmp_path / "checkpoint.pt")
    saved = read_checkpoint(tmp_path / "checkpoint.pt")
    assert saved.round == 2 and saved.history == read_rounds(OLD_RUN / "rounds.jsonl")
    assert saved.measurements["lora"].upload_bytes == 58124 and saved.measurements["rare"].error


def test_a_checkpoint_with_a_malformed_round_record_is_one_line(tmp_path):
    torch.save({"round": 1, "global_state": {}, "history": json.dumps([{"round": 1}]), "measurements": "{}"},
               tmp_path / "checkpoint.pt")
    with pytest.raises(RunDirError, match="malformed history") as err:
        read_checkpoint(tmp_path / "checkpoint.pt")
    assert "\n" not in str(err.value)


def test_a_fresh_run_writes_exactly_its_records(tmp_path):
    plan = tiny_plan(class_plan("weak", 0.5, LAST_ONE), class_plan("mid", 0.25, LAST_TWO, budget=memory_budget(1000)),
                     class_plan("lora", 0.25, LORA_ALL))
    config = tiny_config(rounds=2, clients=4, clients_per_round=4, measure=True, fail_prob=0.3, max_train=40,
                         max_test=8)
    result = rounds.run(plan, config, tmp_path / "run")
    lines = (tmp_path / "run" / "rounds.jsonl").read_text().splitlines(keepends=True)
    assert lines == [rounds_line(RoundRecord.from_dict(json.loads(line))) for line in lines]
    assert result.history == read_rounds(tmp_path / "run" / "rounds.jsonl")  # in memory == on disk
    assert all(isinstance(t, TrainedClient) for r in result.history for t in r.trained)
    assert any(r.dropped for r in result.history)
    on_disk = json.loads((tmp_path / "run" / "measurements.json").read_text())
    assert records.measurements_from_dict(on_disk) == result.measurements
    write_measurements(tmp_path / "again.json", result.measurements)
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "run" / "measurements.json").read_bytes()
    saved = read_checkpoint(tmp_path / "run" / rounds.CHECKPOINT)
    assert saved.history == result.history and saved.measurements == result.measurements


def test_a_measurement_that_failed_keeps_only_its_reason():
    m = Measurement.failed("measurement unavailable (no torch)")
    assert m.to_dict() == {"error": "measurement unavailable (no torch)"}
    assert Measurement.from_dict(m.to_dict()) == m and m.flops_per_step is None


# ---- no string-key reads of the records outside their types --------------------------------------------------

AFTER_THE_PLAN = ("execute", "integrations", "report", "cli", "verify.py", "api.py")
ALLOWED = {"execute/records.py",  # the records' own to_dict/from_dict
           "execute/rundir.py"}  # the checkpoint reader checks the checkpoint's own keys before from_dict
EVENT_KEYS = {"round", "client", "class"}  # progress events other than round_end are small dicts: payload["round"]


def record_keys() -> set[str]:
    measured = Measurement(peak_bytes=1, flops_forward=1, flops_backward=1, upload_bytes=1, batch_size=1)
    trained = TrainedClient(0, "c", 1, upload_bytes=1.0, loss_first=0.0, loss_last=0.0, seconds=0.0)
    record = RoundRecord(1, (0,), (trained,), (DroppedClient(0, "c", "why"),), 0.5, 1.0, 1, None, None, 1.0, "x")
    keys = {*measured.to_dict(), *Measurement.failed("x").to_dict(), *trained.to_dict(), *record.to_dict()}
    return keys | set(record.to_dict()["dropped"][0])


def string_key_reads(tree: ast.AST, keys: set[str]) -> list[tuple[int, str]]:
    """(line, key) of `x["key"]` (read), `x.get("key")` and `"key" in x` for the given keys."""
    hits = []
    for node in ast.walk(tree):
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            key = node.slice.value if isinstance(node.slice, ast.Constant) else None
            if isinstance(node.value, ast.Name) and node.value.id == "payload" and key in EVENT_KEYS:
                key = None
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant)):
            key = node.args[0].value
        elif (isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant)
              and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops)):
            key = node.left.value
        if isinstance(key, str) and key in keys:
            hits.append((node.lineno, key))
    return hits


def test_the_checker_finds_string_key_reads():
    code = 'a = r["accuracy"]\nb = m.get("peak_bytes")\nc = "error" in m\nd = payload["round"]\ne = x["labels"]\n'
    assert string_key_reads(ast.parse(code), record_keys()) == [(1, "accuracy"), (2, "peak_bytes"), (3, "error")]


def test_no_module_after_the_plan_reads_a_record_by_string_key():
    keys = record_keys()
    assert {"class", "peak_bytes", "accuracy", "reason", "flops_measured", "error"} <= keys
    files = [p for part in AFTER_THE_PLAN for p in ((SRC / part).rglob("*.py") if (SRC / part).is_dir()
                                                     else [SRC / part]) if p.is_file()]
    assert len(files) > 20
    found = [f"{p.relative_to(SRC)}:{line}: {key!r}" for p in files if str(p.relative_to(SRC)) not in ALLOWED
             for line, key in string_key_reads(ast.parse(p.read_text()), keys)]
    assert not found, "read these through execute/records.py's types:\n" + "\n".join(found)
