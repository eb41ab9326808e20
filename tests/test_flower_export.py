"""`budgetplan export --format flower` writes only data: hostile plan strings never become code, shell or
TOML structure; files land inside OUT_DIR only, never through a symlink; bad plans and options write nothing.
"""

import dataclasses
import importlib.util
import json
import os
import shlex
import sys
import tomllib

import pytest
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.integrations.flower import export
from cli_helpers import assert_one_line_error
from fl_helpers import LAST_ONE, class_plan, tiny_config, tiny_plan

runner = CliRunner()
SETTINGS = ["--data", "drugreview", "--rounds", "1", "--clients", "6", "--max-train", "40", "--seq-len", "16"]


def hostile_names(marker_dir):
    """Labels that would run, write or break quoting if any generated file pasted them in."""
    touch = f"open({str(marker_dir / 'py')!r}, 'w')"
    return {
        "label": f'x"""\n{touch}\n"""' + "'''\\",
        "classes": [f'a"; {touch} #', f"$(touch {marker_dir / 'sh'})`touch {marker_dir / 'tick'}`",
                    "../../evil\nsecond line = 1\n[table]", "it's \"quoted\" \\ [/bad] \u00e9\x7f\x01"],
    }


def _plan_file(tmp_path, label, names, states=(LAST_ONE,)):
    classes = [class_plan(name, 1 / len(names), states[i % len(states)]) for i, name in enumerate(names)]
    plan = tiny_plan(*classes)
    data = {**plan.to_dict(), "label": label}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    return path, plan


def _tree(root):
    return {os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files}


def _import(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hostile_labels_stay_data_and_nothing_runs_or_lands_outside(tmp_path, monkeypatch):
    markers = tmp_path / "markers"
    markers.mkdir()
    names = hostile_names(markers)
    classes = [class_plan(name, 1 / len(names["classes"]), LAST_ONE) for name in names["classes"]]
    plan = dataclasses.replace(tiny_plan(*classes), label=names["label"])  # in-process: no reader rules apply
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _tree(tmp_path)
    out = tmp_path / "app"
    export.export_flower_app(plan, tiny_config(rounds=1, clients=6), out, run_dir=tmp_path / "run \"dir\"\n$(x)")
    created = _tree(tmp_path) - before
    assert created and all(p.startswith("app" + os.sep) for p in created), created
    # generated code is the fixed text, whatever the plan says
    pkg = out / export.PACKAGE
    assert (pkg / "__init__.py").read_text() == export.INIT_TEXT
    assert (pkg / "server_app.py").read_text() == export.SERVER_TEXT
    assert (pkg / "client_app.py").read_text() == export.CLIENT_TEXT
    assert (out / export.START_SCRIPT).read_text() == export.START_TEXT
    # the data files hold the strings exactly
    saved = json.loads((pkg / export.PLAN_NAME).read_text())
    assert saved["label"] == names["label"] and list(saved["classes"]) == names["classes"]
    project = tomllib.loads((out / "pyproject.toml").read_text())
    assert set(project) == {"build-system", "project", "tool"}  # no table smuggled in
    assert project["tool"]["flwr"]["app"]["config"]["run-dir"] == str(tmp_path / "run \"dir\"\n$(x)")
    node_classes = [tomllib.loads((out / "nodes" / f"node-{i}.toml").read_text()) for i in range(6)]
    assert all(set(n) == {"partition-id", "device-class"} for n in node_classes)
    assert {n["device-class"] for n in node_classes} <= set(names["classes"])
    # the README's shell lines split into plain words: no substitution, no second command
    readme = (out / "README.md").read_text()
    for line in readme.splitlines():
        if line.startswith("flower-supernode"):
            words = shlex.split(line)
            assert words[-2:-1] == ["--node-config"] or words[-1] == "&", line
            assert "$(" not in line and "`" not in line, line
    # importing the app runs nothing
    if importlib.util.find_spec("flwr") is not None:
        sys.path.insert(0, str(out))
        try:
            for module in ("__init__", "server_app", "client_app"):
                _import(pkg / f"{module}.py", f"hostile_{module}")
        finally:
            sys.path.remove(str(out))
    assert list(markers.iterdir()) == []
    assert _tree(work) == set()


@pytest.mark.parametrize("text", ['plain', 'q"uote', "back\\slash", "new\nline", "tab\tand\x7f\x00", "[x]\na = 1",
                                  "\u00e9\U0001F600", "'''", '"""'])
def test_toml_string_round_trips_every_character(text):
    assert tomllib.loads(f"v = {export.toml_string(text)}") == {"v": text}


def test_inline_node_config_is_quoted_for_the_shell_and_read_back_by_flower():
    flwr_config = pytest.importorskip("flwr.common.config")
    line = export.inline_node_config(2, "jetson-nano.v2")
    (arg,) = shlex.split(line)
    assert flwr_config.parse_config_args([arg]) == {"partition-id": 2, "device-class": "jetson-nano.v2"}
    for name in ('a"b', "$(x)", "a b", "it's"):  # only the node file can carry these
        assert export.inline_node_config(0, name) is None


def _export(tmp_path, out, *extra):
    plan_path, _ = _plan_file(tmp_path, "plan", ["weak", "head"])
    return runner.invoke(app, ["export", "--format", "flower", str(plan_path), str(out), *SETTINGS, *extra])


def test_force_replaces_symlinks_inside_out_dir_and_never_writes_through_them(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "app"
    out.mkdir()
    (out / "pyproject.toml").symlink_to(victim)
    (out / export.PACKAGE).symlink_to(outside, target_is_directory=True)
    (out / "nodes").symlink_to(outside / "missing", target_is_directory=True)  # dangling
    assert_one_line_error(_export(tmp_path, out), "not empty", "--force")
    result = _export(tmp_path, out, "--force")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "keep me" and sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    for name in ("pyproject.toml", export.PACKAGE, "nodes"):
        assert not (out / name).is_symlink()
    assert tomllib.loads((out / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]["clients"] == 6


def test_out_dir_that_is_a_symlink_is_refused(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    assert_one_line_error(_export(tmp_path, link, "--force"), "symbolic link")
    assert list(target.iterdir()) == []


def test_write_tree_refuses_names_that_leave_the_directory(tmp_path):
    from budgetplan.errors import ConfigError
    from budgetplan.integrations.flower.outdir import write_tree

    for name in ("../x", "/abs", "a/../../x", "a/./b", ""):
        with pytest.raises(ConfigError):
            write_tree(tmp_path / "out", {name: "x"})
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("change, words", [
    (lambda d: d.pop("kind"), "not a budgetplan plan file"),
    (lambda d: d.update(kind="other", schema_version="7.0"), "not a budgetplan plan file"),
])
def test_export_applies_the_plan_readers_kind_and_version_rules(tmp_path, change, words):
    plan_path, _ = _plan_file(tmp_path, "plan", ["weak", "head"])
    data = json.loads(plan_path.read_text())
    change(data)
    plan_path.write_text(json.dumps(data))
    out = tmp_path / "app"
    result = runner.invoke(app, ["export", "--format", "flower", str(plan_path), str(out), *SETTINGS])
    assert_one_line_error(result, words)
    assert not out.exists()


def test_export_with_an_unknown_dataset_writes_nothing(tmp_path):
    out = tmp_path / "app"
    plan_path, _ = _plan_file(tmp_path, "plan", ["weak", "head"])
    result = runner.invoke(app, ["export", "--format", "flower", str(plan_path), str(out), "--data", "nosuch"])
    assert_one_line_error(result, "unknown dataset 'nosuch'")
    assert not out.exists()


def test_node_files_follow_the_executors_class_assignment(tmp_path):
    from budgetplan.execute.rounds import assign_classes

    out = tmp_path / "app"
    assert _export(tmp_path, out).exit_code == 0
    _, plan = _plan_file(tmp_path, "plan", ["weak", "head"])
    expected = assign_classes(plan, 6, 0)
    found = [tomllib.loads((out / "nodes" / f"node-{i}.toml").read_text()) for i in range(6)]
    assert [n["device-class"] for n in found] == list(expected)
    assert [n["partition-id"] for n in found] == list(range(6))
    federation = tomllib.loads((out / ".flwr" / "config.toml").read_text())["superlink"]
    assert federation["default"] == export.FEDERATION
    assert federation[export.FEDERATION] == {"address": "127.0.0.1:8000",  # TLS by default (test_flower_secure)
                                             "root-certificates": str(out.resolve() / export.CA_CERT)}


def test_hostile_plan_file_through_the_cli_is_refused_or_written_as_data(tmp_path):
    """The CLI reads the plan with the plan reader first: it may refuse such names (one line, nothing
    written); if it accepts them, the app it writes holds them as data only."""
    markers = tmp_path / "markers"
    markers.mkdir()
    names = hostile_names(markers)
    plan_path, _ = _plan_file(tmp_path, names["label"], names["classes"])
    out = tmp_path / "app"
    result = runner.invoke(app, ["export", "--format", "flower", str(plan_path), str(out), *SETTINGS])
    if result.exit_code != 0:
        assert_one_line_error(result)
        assert not out.exists()
    else:
        assert (out / export.PACKAGE / "__init__.py").read_text() == export.INIT_TEXT
        assert (out / export.PACKAGE / "server_app.py").read_text() == export.SERVER_TEXT
    assert list(markers.iterdir()) == []
