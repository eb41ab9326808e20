"""A sweep of generated bad inputs over every command that reads a file (issue 24): truncations, wrong types,
huge / negative / NaN numbers and files of another kind. Each case must end in exit 2 with one line, no traceback,
no 'internal error', and nothing written. Prints one line per case and the count of bad ones; exits 1 if any.

    PYTHONPATH=$PWD/src:$PWD/tests python scripts/bad_input_sweep.py

Not a test: ~1 min on 2 loaded cores and wide; tests/test_bad_input*.py hold one case of each class. The case
tables are one case a line (some lines exceed 120 characters: a case reads better whole than wrapped).
"""
import copy, json, shutil, sys, tempfile
from pathlib import Path

import torch
from typer.testing import CliRunner

from bad_input_helpers import make_plan_files
from budgetplan.cli import app
from budgetplan.devices import BUNDLED_DIR
from budgetplan.models.load import load_model, save_model_file

R = CliRunner()
H = Path(tempfile.mkdtemp(prefix="budgetplan-sweep-")); F = H / "fz"
make_plan_files(H)
_loaded = load_model("tiny-bert")
save_model_file(_loaded, H / "good.pt")
torch.save(_loaded.model.base.state_dict(), H / "sd.pt")
F.mkdir()
PROFILE = json.loads((H / "profile.json").read_text()); PLAN = json.loads((H / "plan.json").read_text())
DEV = (BUNDLED_DIR / "jetson-nano.toml").read_text()
cases = []

def case(name, argv_fn):
    cases.append((name, argv_fn))

def wjson(name, data, raw=None):
    p = F / name; p.write_text(raw if raw is not None else json.dumps(data)); return p

def prof(mut, raw=False):
    d = copy.deepcopy(PROFILE); r = mut(d); return wjson("p.json", d, r if raw else None)

def plan(mut, raw=False):
    d = copy.deepcopy(PLAN); r = mut(d); return wjson("plan.json", d, r if raw else None)

def dev(line):
    key = line.split("=")[0].strip()
    text = "\n".join([line] + [l for l in DEV.splitlines() if not l.startswith(key + " =")]) + "\n"
    p = F / "d.toml"; p.write_text(text); return p

part = lambda d: d["blocks"][0]["states"]["trained"]["input_grad"]
def setp(getter, k, v):
    def m(d): getter(d)[k] = v
    return m

OUT = F / "out.json"
solve = lambda p: ["solve", "-p", str(p), "-d", "jetson-nano", "--json", str(OUT)]
# profiles: huge / negative / NaN / wrong type / truncation / wrong kind
for name, mut in {
    "flops 1e30": setp(part, "flops_forward", 10**31), "flops_backward float 1e40": setp(part, "flops_backward", 1e40),
    "param_bytes 2**60": setp(part, "param_bytes", 2**60), "trainable_params 1e20": setp(part, "trainable_params", 10**20),
    "boundary_bytes 1e18": setp(lambda d: d, "boundary_bytes", 10**18),
    "held_other 1e20": lambda d: d["held_other_bytes"].__setitem__(0, 10**20) if d["held_other_bytes"] else d.update(held_other_bytes=[10**20]*4),
    "batch_size 1e20": setp(lambda d: d["context"], "batch_size", 10**20), "seq_len string": setp(lambda d: d["context"], "seq_len", "16"),
    "num_blocks negative": setp(lambda d: d["model"], "num_blocks", -1), "blocks not list": setp(lambda d: d, "blocks", {}),
    "shared_saved_bytes huge": setp(part, "shared_saved_bytes", {"x": 10**30}), "alpha 1e300": setp(lambda d: d["context"], "lora_alpha_per_rank", 1e300),
    "importance 1e300": setp(lambda d: d, "importance", {"method": "m", "data": "d", "steps": 1, "seconds": 1.0, "blocks": [{"trained": 1e300}] * 4}),
    "importance seconds 1e300": setp(lambda d: d, "importance", {"method": "m", "data": "d", "steps": 1, "seconds": 1e300, "blocks": [{"trained": 1.0}] * 4}),
    "measurement importance 1e300": lambda d: d["measurement"].update({f"importance.block.{i}": 1e300 for i in range(4)}),
}.items():
    case(f"solve: profile {name}", lambda mut=mut: solve(prof(mut)))
case("solve: profile truncated", lambda: solve(wjson("p.json", None, (H / "profile.json").read_text()[:5000])))
case("solve: profile is a plan", lambda: solve(H / "plan.json"))
case("solve: profile is a device TOML", lambda: solve(dev("name = \"x\"")))
case("solve: profile is a directory", lambda: solve(F))
case("solve: profile is a model.pt", lambda: solve(H / "good.pt"))
case("solve: profile empty", lambda: solve(wjson("p.json", None, "")))
# devices
for line in ["flops_per_s = 1e308", "flops_per_s = -1e308", "memory_bytes = 9_000_000_000_000_000_000", "total_memory_bytes = 1e30",
             "uplink_bits_per_s = 1e300", "round_deadline_s = 1e300", "upload_time_budget_s = 1e20", "samples_per_round = 9_000_000_000_000_000_000",
             "flops_per_s = \"fast\"", "sources = 3", "description = 5", "name = 7"]:
    case(f"solve: device {line}", lambda line=line: ["solve", "-p", str(H / "profile.json"), "--device-file", str(dev(line)), "--json", str(OUT)])
    case(f"devices show: {line}", lambda line=line: ["devices", "show", "x", "--device-file", str(dev(line))])
case("solve: device file is a profile", lambda: ["solve", "-p", str(H / "profile.json"), "--device-file", str(H / "profile.json"), "--json", str(OUT)])
case("solve: device file truncated", lambda: ["solve", "-p", str(H / "profile.json"), "--device-file", str(wjson("d.toml", None, DEV[:200])), "--json", str(OUT)])
# fleets
def fleet(text):
    p = F / "f.toml"; p.write_text(text.replace("PROFILE", str(H / "profile.json"))); return ["solve", "--fleet", str(p), "--json", str(OUT)]
for name, text in {
    "share 1e300": 'name="f"\nmodels=["PROFILE"]\n[[classes]]\ndevice="jetson-nano"\nshare=1e300\n',
    "share inf": 'name="f"\nmodels=["PROFILE"]\n[[classes]]\ndevice="jetson-nano"\nshare=inf\n',
    "ingress 1e300": 'name="f"\nmodels=["PROFILE"]\ningress_bytes_per_round=1e300\n[[classes]]\ndevice="jetson-nano"\nshare=1.0\n',
    "clients_per_round 1e30": 'name="f"\nmodels=["PROFILE"]\nclients_per_round=1e30\n[[classes]]\ndevice="jetson-nano"\nshare=1.0\n',
    "clients_per_round huge int": 'name="f"\nmodels=["PROFILE"]\nclients_per_round=9000000000000000000\n[[classes]]\ndevice="jetson-nano"\nshare=1.0\n',
    "min_coverage nan": 'name="f"\nmodels=["PROFILE"]\nmin_coverage=nan\n[[classes]]\ndevice="jetson-nano"\nshare=1.0\n',
    "models a plan": 'name="f"\nmodels=["' + str(H / "plan.json") + '"]\n[[classes]]\ndevice="jetson-nano"\nshare=1.0\n',
    "models number": 'name="f"\nmodels=[3]\n[[classes]]\ndevice="jetson-nano"\nshare=1.0\n',
    "classes a string": 'name="f"\nmodels=["PROFILE"]\nclasses="x"\n',
    "device_file a plan": 'name="f"\nmodels=["PROFILE"]\n[[classes]]\ndevice_file="' + str(H / "plan.json") + '"\nshare=1.0\n',
}.items():
    case(f"solve: fleet {name}", lambda text=text: fleet(text))
case("solve: fleet is a profile", lambda: ["solve", "--fleet", str(H / "profile.json"), "--json", str(OUT)])
# importance
def imp(text, suffix=".toml"):
    p = F / f"i{suffix}"; p.write_text(text); return ["solve", "-p", str(H / "profile.json"), "-d", "jetson-nano", "--objective", "importance", "--importance", str(p), "--json", str(OUT)]
for name, (text, sfx) in {"nan": ("weights=[nan,1,1,1]", ".toml"), "inf": ("weights=[inf,1,1,1]", ".toml"), "-inf": ("weights=[-inf,1,1,1]", ".toml"),
                          "1e300": ('{"weights":[1e300,1,1,1]}', ".json"), "string": ('weights=["a",1,1,1]', ".toml"), "negative": ("weights=[-1,1,1,1]", ".toml"),
                          "three": ("weights=[1,1,1]", ".toml"), "truncated json": ('{"weights":[1,1', ".json"), "all zero": ("weights=[0,0,0,0]", ".toml"),
                          "nested": ("weights=[[1],1,1,1]", ".toml"), "bool": ("weights=[true,1,1,1]", ".toml")}.items():
    case(f"solve: importance {name}", lambda text=text, sfx=sfx: imp(text, sfx))
# plans
for name, mut in {
    "peak 1e30": lambda d: d["classes"]["jetson-nano"]["predicted"].update(peak_bytes=10**30),
    "budget flops 1e40": lambda d: d["classes"]["jetson-nano"]["budget"].update(flops_per_round=10**40),
    "device flops_per_s 1e300": lambda d: d["classes"]["jetson-nano"]["device"].update(flops_per_s=1e300),
    "time_limit_s 1e300": lambda d: d["solver"].update(time_limit_s=1e300),
    "num_blocks 1e20": lambda d: d["model"].update(num_blocks=10**20),
    "batch_size 1e20": lambda d: d["context"].update(batch_size=10**20),
    "share string": lambda d: d["classes"]["jetson-nano"].update(share="0.5"),
    "classes list": lambda d: d.update(classes=[]),
}.items():
    case(f"plan validate: {name}", lambda mut=mut: ["plan", "validate", str(plan(mut))])
    case(f"run: plan {name}", lambda mut=mut: ["run", str(plan(mut)), "--data", "drugreview", "--rounds", "1", "--out", str(F / "run")])
case("plan validate: truncated", lambda: ["plan", "validate", str(wjson("plan.json", None, (H / "plan.json").read_text()[:3000]))])
case("plan show: a profile", lambda: ["plan", "show", str(H / "profile.json")])
case("plan show: a directory", lambda: ["plan", "show", str(F)])
case("run: a profile", lambda: ["run", str(H / "profile.json"), "--data", "drugreview", "--out", str(F / "run")])
case("run: a model.pt", lambda: ["run", str(H / "good.pt"), "--data", "drugreview", "--out", str(F / "run")])
case("export: a profile", lambda: ["export", str(H / "profile.json"), str(F / "app"), "--format", "flower", "--data", "drugreview"])
case("compare: profile is a plan", lambda: ["compare", str(H / "plan.json"), "--profile", str(H / "plan.json"), "--data", "drugreview", "--out", str(F / "cmp")])
case("compare: plan is a profile", lambda: ["compare", str(H / "profile.json"), "--profile", str(H / "profile.json"), "--data", "drugreview", "--out", str(F / "cmp")])
# verify
def rundir(measure=None, plan_text=None, extra=None):
    d = F / "rd"; shutil.rmtree(d, ignore_errors=True); d.mkdir()
    (d / "plan.json").write_text(plan_text if plan_text is not None else (H / "plan.json").read_text()); (d / "run.json").write_text("{}")
    if measure is not None: (d / "measurements.json").write_text(measure)
    return ["verify", str(d)]
case("verify: a plan file", lambda: ["verify", str(H / "plan.json")])
case("verify: a profile file", lambda: ["verify", str(H / "profile.json")])
case("verify: a model file", lambda: ["verify", str(H / "good.pt")])
case("verify: measurements peak 1e30", lambda: rundir('{"jetson-nano": {"peak_bytes": 1e30, "flops_forward": 1, "flops_backward": 1, "upload_bytes": 1, "batch_size": 4}}'))
case("verify: measurements huge int", lambda: rundir('{"jetson-nano": {"peak_bytes": 100000000000000000000000, "flops_forward": 1, "flops_backward": 1, "upload_bytes": 1, "batch_size": 4}}'))
case("verify: measurements NaN", lambda: rundir('{"jetson-nano": {"peak_bytes": NaN}}'))
case("verify: measurements truncated", lambda: rundir('{"jetson-nano": {"peak_'))
case("verify: measurements a list", lambda: rundir('[1,2]'))
case("verify: plan.json in run dir truncated", lambda: rundir(None, (H / "plan.json").read_text()[:100]))
case("verify: plan.json in run dir is a profile", lambda: rundir(None, (H / "profile.json").read_text()))
# models
def model(name, data: bytes):
    p = F / name; p.write_bytes(data); return ["profile", str(p), "--json", str(OUT), "--no-measure"]
GOOD = (H / "good.pt").read_bytes()
case("profile: model truncated 1/4", lambda: model("m.pt", GOOD[: len(GOOD) // 4]))
case("profile: model 3 bytes", lambda: model("m.pt", GOOD[:3]))
case("profile: model JSON", lambda: model("m.pt", b'{"a": 1}'))
case("profile: model a plan", lambda: model("m.json", (H / "plan.json").read_bytes()))
case("profile: model random bytes", lambda: model("m.pt", bytes(range(256)) * 4))
case("profile: bare state dict", lambda: ["profile", str(H / "sd.pt"), "--json", str(OUT), "--no-measure"])
case("profile: model a run dir", lambda: (rundir(), ["profile", str(F / "rd"), "--json", str(OUT), "--no-measure"])[1])
case("profile: model a device toml", lambda: ["profile", str(dev("name = \"x\"")), "--json", str(OUT), "--no-measure"])
case("importance: profile is a plan", lambda: ["importance", "tiny-bert", "--profile", str(H / "plan.json"), "--data", "drugreview"])
case("importance: profile truncated", lambda: ["importance", "tiny-bert", "--profile", str(wjson("p.json", None, (H / "profile.json").read_text()[:999])), "--data", "drugreview"])
case("flower-local: a plan", lambda: ["flower-local", str(H / "plan.json")])

bad = 0
for name, argv_fn in cases:
    for p in (OUT, F / "run", F / "app", F / "cmp"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    argv = argv_fn()
    res = R.invoke(app, argv)
    lines = [l for l in res.output.splitlines() if l.strip()]
    written = [str(p) for p in (OUT, F / "run", F / "app", F / "cmp") if p.exists()]
    ok = res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output and "internal error" not in res.output and not written
    bad += not ok
    print(("ok  " if ok else "BAD ") + f"{name}: rc={res.exit_code} {'WROTE ' + ','.join(written) if written else ''}| {lines[0][:230] if lines else repr(res.exception)[:200]}" + ("" if len(lines) <= 1 else f" (+{len(lines)-1} lines)"))
print(f"{len(cases)} cases, {bad} bad")
shutil.rmtree(H, ignore_errors=True)
sys.exit(1 if bad else 0)
