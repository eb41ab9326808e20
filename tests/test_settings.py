"""A run's settings are declared once (execute/settings.py): a setting added there, in one field, reaches the CLI of
`run`, `export` and `compare` (help, parsing, its rule in flag words), the Python API (RunConfig, TrainSettings,
rule in field words), the Flower run config (written, read back, absent = default) and resume identity."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from budgetplan.cli import common
from budgetplan.errors import ConfigError
from budgetplan import engines as engine
from budgetplan.execute import settings
from budgetplan.execute.settings import setting
from budgetplan.integrations.flower.settings import run_config_from_values, run_config_values
from cli_helpers import assert_one_line_error
from fl_helpers import tiny_config, tiny_plan

runner = CliRunner()
SETTINGS = ["--data", "drugreview", "--rounds", "1", "--clients", "6", "--max-train", "40", "--seq-len", "16"]


@pytest.fixture(params=["train", "run"])
def added(request, monkeypatch):
    """One new setting, declared in one place: a field of TrainSettings (a client's) or of RunConfig (the run's)."""
    if request.param == "train":
        @dataclass(frozen=True)
        class Train(settings.TrainSettings):
            grad_clip_norm: float | None = setting(None, help="clip each local gradient at this norm", rule="rate")

        monkeypatch.setattr(settings, "TrainSettings", Train)
        return "grad_clip_norm", "--grad-clip-norm", "grad-clip-norm", lambda config: config.train.grad_clip_norm, None

    @dataclass(frozen=True)
    class Config(settings.RunConfig):
        server_rate: float = setting(1.0, help="server step size on the averaged update", rule="rate")

    monkeypatch.setattr(settings, "RunConfig", Config)
    return "server_rate", "--server-rate", "server-rate", lambda config: config.server_rate, 1.0


def fresh_app() -> typer.Typer:
    """The CLI built again (as at start-up), so it sees the setting the fixture added."""
    app = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    app.callback()(lambda: None)
    common.register_all(app)
    return app


@pytest.fixture()
def plan_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(tiny_plan().to_dict()))
    return path


def test_an_added_setting_is_an_option_of_every_run_command(added):
    _, flag, _, _, _ = added
    app = fresh_app()
    for command in ("run", "export", "compare"):
        result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0 and flag in result.output, (command, result.output)
    words = "clip each local gradient at this norm" if flag == "--grad-clip-norm" else "server step size"
    assert words in runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output


def test_an_added_setting_is_parsed_and_reaches_the_run_config(added, plan_file, tmp_path, monkeypatch):
    name, flag, _, read, _ = added
    seen = []

    def fake_run(engine_name, plan, config, run_dir, **kw):
        seen.append(config)
        raise ConfigError("stopped before running")

    monkeypatch.setattr(engine, "run_experiment", fake_run)
    result = runner.invoke(fresh_app(), ["run", str(plan_file), *SETTINGS, flag, "0.25", "--out", str(tmp_path)])
    assert_one_line_error(result, "stopped before running")
    assert read(seen[0]) == 0.25
    assert_one_line_error(runner.invoke(fresh_app(), ["run", str(plan_file), *SETTINGS, flag, "0"]),
                          f"{flag} must be a positive number, got 0.0; run again with a valid {flag}")


def test_an_added_setting_checks_itself_in_python_words(added):
    name, _, _, read, _ = added
    with pytest.raises(ConfigError, match=rf"^{name} must be a positive number, got -1; pass \w+ a valid {name}$"):
        settings.build({"data": "drugreview", name: -1})
    config = settings.build({"data": "drugreview", name: 0.5})
    assert read(config) == 0.5
    assert settings.build(settings.flat_values(config)) == config


def test_an_added_setting_round_trips_through_the_flower_config(added, plan_file, tmp_path):
    name, flag, key, read, default = added
    out = tmp_path / "app"
    result = runner.invoke(fresh_app(), ["export", str(plan_file), str(out), "--format", "flower", *SETTINGS,
                                         flag, "0.75"])
    assert result.exit_code == 0, result.output
    values = tomllib.loads((out / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert values[key] == 0.75
    assert read(run_config_from_values(values)) == 0.75
    del values[key]  # an app exported before the setting existed: the setting's default
    assert read(run_config_from_values(values)) == default


def test_an_added_setting_keeps_older_run_directories_resumable(added):
    name, _, _, _, _ = added
    config = settings.build({"data": "drugreview"})
    older = json.loads(json.dumps(config.identity()))
    (older["train"] if name == "grad_clip_norm" else older).pop(name)  # run.json written before the setting
    assert settings.with_defaults(older) == config.identity()


def test_the_flower_config_round_trips_every_setting_it_carries():
    config = tiny_config(seq_len=None, max_train=None, partition="dirichlet", alpha=0.3, seed=7)
    back = run_config_from_values(run_config_values(config))
    left_out = {s.name for s in settings.all_settings() if not s.flower_key}
    assert left_out == {"max_seconds", "fail_at_step", "fail_prob"}
    assert settings.flat_values(back) == settings.flat_values(config)
    with pytest.raises(ConfigError, match="lacks 'dataset'"):
        run_config_from_values({k: v for k, v in run_config_values(config).items() if k != "dataset"})
    with pytest.raises(ConfigError, match=r"clients = 'many' is of the wrong type \(want int\)"):
        run_config_from_values({**run_config_values(config), "clients": "many"})


def test_option_checks_come_before_the_heavy_imports(plan_file):
    """`--batch-size 0` is refused before torch, transformers, peft or flwr load (they take seconds)."""
    code = ("import sys\nfrom budgetplan.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('exit', e.code, sorted(m for m in ('torch', 'transformers', 'peft', 'flwr') "
            "if m in sys.modules))\n")
    for bad in (["--batch-size", "0"], ["--optimizer", "lion"], ["--fail-prob", "1"]):
        done = subprocess.run([sys.executable, "-c", code, "run", str(plan_file), "--data", "drugreview", *bad],
                              capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == "exit 2 []", (bad, done.stdout, done.stderr)
        assert f"{bad[0]} must be" in done.stderr or f"unknown {bad[0]}" in done.stderr, done.stderr
