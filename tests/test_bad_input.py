"""Bad and hostile input, as a table of mutations: every command that reads a file or an option refuses a bad one.

Each case asserts a non-zero exit, exactly one line naming the problem, no 'internal error', and that nothing was
written (no plan, no run directory, an existing run directory unchanged).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from bad_input_helpers import DEVICES, make_plan_files, refused, runner
from budgetplan.cli import app
from budgetplan.models.load import load_model, save_model_file

SMALL = ["--rounds", "1", "--clients", "4", "--local-steps", "1", "--max-train", "40", "--max-test", "8",
         "--seq-len", "16", "--no-measure"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_plan_files(tmp_path_factory.mktemp("bad-input"))


class Raw(str):
    """A mutation's return value that is the file's whole text (other return values are ignored)."""


def _write_mutated(src: Path, dst: Path, mutate) -> Path:
    data = json.loads(src.read_text())
    text = mutate(data)
    dst.write_text(text if isinstance(text, Raw) else json.dumps(data))
    return dst


def _part(data):
    return data["blocks"][1]["states"]["trained"]["input_grad"]


def _set(getter, key, value):
    def mutate(data):
        getter(data)[key] = value
    return mutate


def _raw(getter, key, literal):
    """Write a literal that json.dumps cannot (NaN, 1e999) into the file text."""
    def mutate(data):
        getter(data)[key] = "@@"
        return Raw(json.dumps(data).replace('"@@"', literal))
    return mutate


def _deep(data):
    data["measurement"] = "@@"
    return Raw(json.dumps(data).replace('"@@"', "[" * 100_000 + "]" * 100_000))


PROFILE_MUTATIONS = {
    "negative flops_forward": (_set(_part, "flops_forward", -1), "flops_forward"),
    "negative flops_backward": (_set(_part, "flops_backward", -5), "flops_backward"),
    "negative activation_bytes": (_set(_part, "activation_bytes", -1), "activation_bytes"),
    "negative extra bytes": (_set(_part, "forward_extra_bytes", -100), "forward_extra_bytes"),
    "negative param_bytes": (_set(lambda d: d["pre"]["frozen_outside"]["no_input_grad"], "param_bytes", -1),
                             "param_bytes"),
    "negative trainable_params": (_set(_part, "trainable_params", -3), "trainable_params"),
    "negative optimizer_state_bytes": (_set(_part, "optimizer_state_bytes", -8), "optimizer_state_bytes"),
    "NaN flops": (_raw(_part, "flops_forward", "NaN"), "NaN"),
    "infinite bytes": (_raw(_part, "activation_bytes", "1e999"), "not finite"),
    "-Infinity": (_raw(_part, "step_extra_bytes", "-Infinity"), "Infinity"),
    "string bytes": (_set(_part, "param_bytes", "12"), "param_bytes"),
    "fractional count": (_set(_part, "trainable_params", 1.5), "trainable_params"),
    "negative resident bytes": (_set(lambda d: d, "resident_bytes", -1), "resident_bytes"),
    "activation bytes 1e30": (_set(_part, "activation_bytes", 1e30), "activation_bytes = 1e+30 is more than 1 PiB"),
    "resident bytes 1e30": (_set(lambda d: d, "resident_bytes", 1e30), "resident_bytes = 1e+30 is more than 1 PiB"),
    "FLOPs 10**31": (_set(_part, "flops_backward", 10**31), "flops_backward"),
    "block missing": (lambda d: d["blocks"].pop(), "num_blocks"),
    "num_blocks disagrees": (_set(lambda d: d["model"], "num_blocks", 7), "num_blocks"),
    "lora-0 state": (lambda d: d["blocks"][0]["states"].update(
        {"lora-0": d["blocks"][0]["states"]["lora-4"]}), "lora-0"),
    "unknown state": (lambda d: [b["states"].update({"bogus": b["states"]["trained"]}) for b in d["blocks"]],
                      "bogus"),
    "states differ per block": (lambda d: d["blocks"][2]["states"].pop("lora-4"), "blocks/2/states"),
    "boundary missing": (lambda d: d["blocks"][0]["states"]["trained"].pop("no_input_grad"), "no_input_grad"),
    "unknown boundary": (lambda d: d["post"].update({"sideways": d["post"]["input_grad"]}), "sideways"),
    "block index wrong": (_set(lambda d: d["blocks"][1], "index", 5), "index"),
    "alpha zero": (_set(lambda d: d["context"], "lora_alpha_per_rank", 0), "lora_alpha_per_rank"),
    "alpha negative": (_set(lambda d: d["context"], "lora_alpha_per_rank", -2), "lora_alpha_per_rank"),
    "batch size zero": (_set(lambda d: d["context"], "batch_size", 0), "batch_size"),
    "lora rank not profiled": (_set(lambda d: d["context"], "lora_ranks", [8]), "lora_ranks"),
    "held_hidden length": (lambda d: d["held_hidden"].append([0]), "held_hidden"),
    "held_hidden ahead": (lambda d: d["held_hidden"].__setitem__(1, [3]), "held_hidden"),
    "config states length": (lambda d: d["configs"].append({**d["configs"][0], "block_states": ["trained"]}),
                             "configs"),
    "kind deleted": (lambda d: d.pop("kind"), "kind"),
    "other kind and version": (lambda d: d.update(kind="other", schema_version="7.0"), "kind"),
    "major version 7": (_set(lambda d: d, "schema_version", "7.0"), "schema version"),
    "list not object": (lambda d: Raw("[1, 2]"), "profile"),
    "deep nesting": (_deep, "nested too deeply"),
    "importance per block": (_set(lambda d: d, "importance", {"method": "m", "blocks": [{}]}), "importance"),
    "importance negative": (_set(lambda d: d, "importance", {"method": "m", "blocks": [{"trained": -1.0}] * 4}),
                            "importance"),
}


@pytest.mark.parametrize("case", PROFILE_MUTATIONS)
def test_solve_refuses_a_mutated_profile(files, tmp_path, case):
    mutate, word = PROFILE_MUTATIONS[case]
    path = _write_mutated(files / "profile.json", tmp_path / "profile.json", mutate)
    out = tmp_path / "plan.json"
    refused(runner.invoke(app, ["solve", "-p", str(path), *DEVICES, "--json", str(out)]), str(path), word)
    assert not out.exists()


def test_profile_accepts_the_known_optional_and_additive_fields(files, tmp_path):
    importance = {"method": "gradient-norm", "data": "drugreview", "steps": 4, "seconds": 1.5,
                  "source": "measured", "blocks": [{"trained": 0.5, "lora-4": 0.25}] * 4}
    path = _write_mutated(files / "profile.json", tmp_path / "profile.json",
                          lambda d: d.update(importance=importance, some_future_field={"x": 1}))
    result = runner.invoke(app, ["solve", "-p", str(path), *DEVICES, "--json", str(tmp_path / "plan.json")])
    assert result.exit_code == 0, result.output


def _cls(data):
    return data["classes"]["jetson-nano"]


def _both(key, value):
    def mutate(data):
        for entry in data["classes"].values():
            entry[key] = value
    return mutate


def _lora_class(data):
    """Make jetson-nano a LoRA class (with its lora section) so LoRA fields can be mutated."""
    entry = _cls(data)
    entry["block_states"] = ["lora-4"] * 4
    entry["lora"] = {"ranks": {str(i): 4 for i in range(4)}, "alpha_per_rank": 2.0, "alpha": {},
                     "target_modules": ["q"], "blocks_path": "base.encoder.layer"}
    return entry["lora"]


PLAN_MUTATIONS = {
    "NaN share": (_raw(_cls, "share", "NaN"), "NaN"),
    "share zero": (lambda d: [_cls(d).update(share=0.0), d["classes"]["raspberry-pi-4-4gb"].update(share=1.0)],
                   "share"),
    "share above one": (_set(_cls, "share", 1.5), "share"),
    "shares sum to 1.5": (_both("share", 0.75), "sum to 1.5"),
    "3 states for 4 blocks": (lambda d: _cls(d)["block_states"].pop(), "3 states"),
    "5 states for 4 blocks": (lambda d: _cls(d)["block_states"].append("trained"), "5 states"),
    "no states": (_set(_cls, "block_states", []), "0 states"),
    "lora-0": (_set(_cls, "block_states", ["frozen_outside"] * 3 + ["lora-0"]), "lora-0"),
    "lora-x": (_set(_cls, "block_states", ["frozen_outside"] * 3 + ["lora-x"]), "block_states"),
    "frozen_in_path lowest": (_set(_cls, "block_states", ["frozen_in_path"] + ["trained"] * 3), "gradient path"),
    "frozen_outside above trained": (_set(_cls, "block_states", ["trained", "frozen_outside", "trained", "trained"]),
                                     "gradient path"),
    "alpha NaN": (_raw(lambda d: d["context"], "lora_alpha_per_rank", "NaN"), "NaN"),
    "alpha inf": (_raw(lambda d: d["context"], "lora_alpha_per_rank", "1e999"), "not finite"),
    "alpha zero": (_set(lambda d: d["context"], "lora_alpha_per_rank", 0), "lora_alpha_per_rank"),
    "alpha negative": (_set(lambda d: d["context"], "lora_alpha_per_rank", -1.0), "lora_alpha_per_rank"),
    "class alpha zero": (_set(_lora_class, "alpha_per_rank", 0), "alpha_per_rank"),
    "class alpha negative": (_set(_lora_class, "alpha_per_rank", -4), "alpha_per_rank"),
    "lora ranks disagree": (_set(_lora_class, "ranks", {"0": 8}), "ranks"),
    "num_blocks disagrees": (_set(lambda d: d["model"], "num_blocks", 6), "6 blocks"),
    "kind deleted": (lambda d: d.pop("kind"), "kind"),
    "other kind and version": (lambda d: d.update(kind="other", schema_version="7.0"), "kind"),
    "version 7": (_set(lambda d: d, "schema_version", "7.0"), "schema version"),
    "no classes": (_set(lambda d: d, "classes", {}), "classes"),
    "classes missing": (lambda d: d.pop("classes"), "classes"),
    "negative predicted peak": (lambda d: _cls(d)["predicted"].update(peak_bytes=-1), "peak_bytes"),
    "deep nesting": (lambda d: Raw(json.dumps(d).replace('"fleet": null', '"fleet": ' + "[" * 100_000 + "]" * 100_000)),
                     "nested too deeply"),
    "not JSON": (lambda d: Raw("{plan"), "not valid JSON"),
}


@pytest.mark.parametrize("case", PLAN_MUTATIONS)
def test_plan_validate_refuses_a_mutated_plan(files, tmp_path, case):
    mutate, word = PLAN_MUTATIONS[case]
    path = _write_mutated(files / "plan.json", tmp_path / "plan.json", mutate)
    refused(runner.invoke(app, ["plan", "validate", str(path)]), str(path), word)


@pytest.mark.parametrize("case", ["NaN share", "5 states for 4 blocks", "frozen_in_path lowest", "alpha zero",
                                  "kind deleted", "other kind and version", "no classes", "lora-0"])
def test_run_refuses_a_mutated_plan_before_writing(files, tmp_path, case):
    mutate, word = PLAN_MUTATIONS[case]
    path = _write_mutated(files / "plan.json", tmp_path / "plan.json", mutate)
    out = tmp_path / "run"
    refused(runner.invoke(app, ["run", str(path), "--data", "drugreview", *SMALL, "--out", str(out)]), word)
    assert not out.exists()


def test_markup_in_a_class_name_is_printed_not_interpreted(files, tmp_path):
    def rename(data):
        data["classes"]["[/bad] [bold]x[/bold]"] = data["classes"].pop("jetson-nano")
    path = _write_mutated(files / "plan.json", tmp_path / "plan.json", rename)
    result = runner.invoke(app, ["plan", "show", str(path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "[/bad]" in result.output and "[bold]x[/bo" in result.output  # folded by the column, not styled


GOOD_DEVICE = Path(__file__).resolve().parents[1] / "profiles" / "jetson-nano.toml"


def _toml_line(key: str, value: str):
    def mutate(text: str) -> str:
        lines = [line for line in text.splitlines() if not line.startswith(f"{key} =")]
        return "\n".join([f"{key} = {value}"] + lines) + "\n" if value is not None else "\n".join(lines) + "\n"
    return mutate


DEVICE_MUTATIONS = {
    "empty name": (_toml_line("name", '""'), "name"),
    "name is a path": (_toml_line("name", '"../../etc/x"'), "name"),
    "name with a slash": (_toml_line("name", '"a/b"'), "name"),
    "name with markup": (_toml_line("name", '"[/bad]"'), "name"),
    "negative memory": (_toml_line("memory_bytes", "-1"), "memory_bytes"),
    "NaN FLOP/s": (_toml_line("flops_per_s", "nan"), "flops_per_s"),
    "FLOP/s 1e308": (_toml_line("flops_per_s", "1e308"), "flops_per_s = 1e+308 is more than"),
    "deadline 1e300": (_toml_line("round_deadline_s", "1e300"), "round_deadline_s = 1e+300 is more than"),
    "infinite uplink": (_toml_line("uplink_bits_per_s", "inf"), "uplink_bits_per_s"),
    "string deadline": (_toml_line("round_deadline_s", '"300"'), "round_deadline_s"),
    "fractional samples": (_toml_line("samples_per_round", "2.5"), "samples_per_round"),
    "memory above total": (_toml_line("memory_bytes", "8_589_934_592"), "exceeds total_memory_bytes"),
    "field missing": (_toml_line("uplink_bits_per_s", None), "uplink_bits_per_s"),
    "unknown field": (_toml_line("gpu", "true"), "gpu"),
    "not TOML": (lambda text: text + "\n[[[", "not valid TOML"),
    "nested too deeply": (lambda text: text + "deep = " + "[" * 2000 + "]" * 2000 + "\n", "nested too deeply"),
}


@pytest.mark.parametrize("case", DEVICE_MUTATIONS)
def test_solve_refuses_a_mutated_device_file(files, tmp_path, case):
    mutate, word = DEVICE_MUTATIONS[case]
    path = tmp_path / "device.toml"
    path.write_text(mutate(GOOD_DEVICE.read_text()))
    out = tmp_path / "plan.json"
    refused(runner.invoke(app, ["solve", "-p", str(files / "profile.json"), "--device-file", str(path),
                                "--json", str(out)]), word)
    assert not out.exists()


def _fleet(classes: str) -> str:
    return f'name = "f"\nmodels = ["PROFILE"]\n{classes}'


FLEET_MUTATIONS = {
    "device name is a path": (_fleet('[[classes]]\ndevice = "../profiles/jetson-nano"\nshare = 1.0\n'),
                              "not a device name"),
    "NaN share": (_fleet('[[classes]]\ndevice = "jetson-nano"\nshare = nan\n'), "share"),
    "shares sum to 0.5": (_fleet('[[classes]]\ndevice = "jetson-nano"\nshare = 0.5\n'), "sum to"),
    "negative share": (_fleet('[[classes]]\ndevice = "jetson-nano"\nshare = -1.0\n'), "share"),
    "no classes": (_fleet(""), "classes"),
    "class twice": (_fleet('[[classes]]\ndevice = "jetson-nano"\nshare = 0.5\n' * 2), "twice"),
}


@pytest.mark.parametrize("case", FLEET_MUTATIONS)
def test_solve_refuses_a_mutated_fleet(files, tmp_path, case):
    text, word = FLEET_MUTATIONS[case]
    path = tmp_path / "fleet.toml"
    path.write_text(text.replace("PROFILE", str(files / "profile.json")))
    out = tmp_path / "plan.json"
    refused(runner.invoke(app, ["solve", "--fleet", str(path), "--json", str(out)]), word)
    assert not out.exists()


@pytest.mark.parametrize("name", ["../../x", "../profiles/jetson-nano", "/etc/passwd", "a/b", ""])
def test_a_device_name_is_never_a_path(files, tmp_path, name):
    out = tmp_path / "plan.json"
    refused(runner.invoke(app, ["solve", "-p", str(files / "profile.json"), "-d", name, "--json", str(out)]),
            "--device-file")
    assert not out.exists()


class Payload:  # a class torch's weights_only loader refuses to unpickle
    pass


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """A good model.pt and a Hugging Face directory of tiny-bert, and their bytes."""
    root = tmp_path_factory.mktemp("models")
    loaded = load_model("tiny-bert")
    save_model_file(loaded, root / "good.pt")
    loaded.model.base.save_pretrained(root / "hf")
    return root


def _saved(change):
    def write(root: Path, path: Path) -> None:
        obj = torch.load(root / "good.pt", weights_only=True)
        torch.save(change(copy.deepcopy(obj)), path)
    return write


def _bytes(change):
    def write(root: Path, path: Path) -> None:
        path.write_bytes(change((root / "good.pt").read_bytes()))
    return write


def _config(**fields):
    return _saved(lambda obj: {**obj, "config": {**obj["config"], **fields}})


def _wrong_shape(obj):
    key = next(k for k, v in obj["state_dict"].items() if v.dim() == 2)
    obj["state_dict"][key] = torch.zeros(3, 3)
    return obj


def _hf(change):
    def write(root: Path, path: Path) -> None:
        shutil.copytree(root / "hf", path)
        change(path)
    return write


def _truncate_safetensors(path: Path) -> None:
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


MODEL_MUTATIONS = {
    "truncated model.pt": (_bytes(lambda b: b[: len(b) // 2]), "truncated"),
    "ten bytes": (_bytes(lambda b: b[:10]), "truncated"),
    "empty file": (_bytes(lambda b: b""), "truncated"),
    "text file": (_bytes(lambda b: b"this is not a model\n"), "not a torch file"),
    "cut at 1/40 (torch: EINVAL)": (_bytes(lambda b: b[: len(b) // 40]), "truncated torch file"),
    "a JSON file": (_bytes(lambda b: b'{"hidden_size": 8}'), "is a JSON file, not a torch file"),
    "a bare state dict": (_saved(lambda obj: obj["state_dict"]), "save it as torch.save({'config'"),
    "wrong tensor shapes": (_saved(_wrong_shape), "does not fit its config"),
    "heads do not divide hidden": (_config(num_attention_heads=5), "cannot build a model"),
    "string hidden size": (_config(hidden_size="abc"), "config"),
    "negative vocabulary": (_config(vocab_size=-5), "cannot build a model"),
    "huge hidden size": (_config(hidden_size=2**20, intermediate_size=2**22), "GiB of memory is available"),
    "unknown model type": (_config(model_type="nosuchmodel"), "nosuchmodel"),
    "a million layers": (_config(num_hidden_layers=10**6), "num_hidden_layers = 1000000"),  # never built: it hangs
    "list instead of state_dict": (_saved(lambda obj: {**obj, "state_dict": list(obj["state_dict"].values())}),
                                   "state_dict"),
    "list instead of dict": (_saved(lambda obj: [1, 2, 3]), "not a budgetplan model file"),
    "pickled object": (_saved(lambda obj: {**obj, "extra": Payload()}), "--trust-pickle"),
    "truncated safetensors": (_hf(_truncate_safetensors), "Hugging Face model"),
    "config.json not JSON": (_hf(lambda p: (p / "config.json").write_text("{")), "Hugging Face model"),
    "config.json string hidden": (_hf(lambda p: (p / "config.json").write_text(
        '{"model_type": "bert", "hidden_size": "x"}')), "Hugging Face model"),
    "config.json a million layers": (_hf(lambda p: (p / "config.json").write_text(json.dumps(
        {**json.loads((p / "config.json").read_text()), "num_hidden_layers": 10**6}))), "num_hidden_layers = 1000000"),
}


@pytest.mark.parametrize("case", MODEL_MUTATIONS)
def test_profile_refuses_a_bad_model_file_in_one_line(model_files, tmp_path, case):
    write, word = MODEL_MUTATIONS[case]
    path = tmp_path / ("model" if "safetensors" in case or "config.json" in case else "model.pt")
    write(model_files, path)
    out = tmp_path / "profile.json"
    refused(runner.invoke(app, ["profile", str(path), "--json", str(out), "--no-measure"]), str(path), word)
    assert not out.exists()
