"""How many more blocks memory-bound classes train when the solver may recompute activations, at what FLOP cost.

Per fleet, the same profile is solved twice with the `layers` objective: with the +recompute states and
without them (`solve --no-recompute`). Every number is derived from the profile's measured parts (peaks are
composed predictions; `--run` measures them): blocks trained, blocks recomputed, predicted peak, GFLOP of one
step, and the ratios recompute / plain. With `--run` the recompute plan is trained for one short round on the
drug reviews through the CLI (`budgetplan run`) and `budgetplan verify` checks every class against the plan.

  .venv/bin/python benchmarks/recompute_gain.py                       # bundled MiniLM profile, demo + mixed-edge
  .venv/bin/python benchmarks/recompute_gain.py --demo-profile --run  # MiniLM as `budgetplan demo` profiles it
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from budgetplan.plan import SolverSettings, plan_from_fleet, write_plan
from budgetplan.profile.io import BUNDLED_PROFILE_PATH, read_profile, write_profile
from budgetplan.profile.compose import FROZEN, compose
from budgetplan.profile.types import TRAINED, is_recompute, is_trainable, recompute_state, without_recompute
from budgetplan.solve import read_fleet, solve_fleet

ROOT = Path(__file__).resolve().parents[1]
FLEETS = (ROOT / "profiles" / "fleets" / "demo.toml", ROOT / "profiles" / "fleets" / "mixed-edge.toml")


def demo_profile(out: Path):
    """MiniLM profiled as `budgetplan demo` does (batch 8, 64 tokens, AdamW, LoRA 4 and 8), with recompute."""
    from budgetplan.execute.data import dataset_info
    from budgetplan.models import load_model
    from budgetplan.profile.profiler import ProfileRequest, profile_model

    loaded = load_model("all-minilm-l6-v2", num_labels=dataset_info("drugreview").num_labels)
    profile = profile_model(loaded, ProfileRequest(batch_size=8, seq_len=64, optimizer="adamw", lora_ranks=(4, 8),
                                                   measure_configs=False))  # verify measures the plan's steps
    write_profile(profile, out)
    return profile


def solve(profile, fleet_path: Path, recompute: bool):
    offered = profile if recompute else without_recompute(profile)
    result = solve_fleet([offered], read_fleet(fleet_path), "layers")
    settings = SolverSettings("layers", False, 10.0, 0, 1, recompute)
    return result, plan_from_fleet(result, settings, "all-minilm-l6-v2")  # a budgetplan.plan.Plan


def rows(plain, recomputed) -> list[str]:
    plain, recomputed = plain.to_dict(), recomputed.to_dict()
    lines = [f"{'class':<22} {'memory MiB':>10}  {'blocks plain -> recompute':>25}  {'recomputed':>10}  "
             f"{'peak MiB plain -> rc':>21}  {'GFLOP/step plain -> rc':>23}  {'FLOP ratio':>10}"]
    for name, a in plain["classes"].items():
        b = recomputed["classes"][name]
        budget = a["budget"]["memory_bytes"] / 2**20
        if not (a["active"] or b["active"]):
            lines.append(f"{name:<22} {budget:>10.0f}  nothing fits either way")
            continue
        count = lambda e: sum(is_trainable(s) for s in e["block_states"]) if e["active"] else 0  # noqa: E731
        flops = lambda e: (e["predicted"]["flops_forward"] + e["predicted"]["flops_backward"]) / 1e9 if e["active"] else 0.0  # noqa: E731
        peak = lambda e: e["predicted"]["peak_bytes"] / 2**20 if e["active"] else 0.0  # noqa: E731
        rc = sum(is_recompute(s) for s in b["block_states"]) if b["active"] else 0
        ratio = f"{flops(b) / flops(a):.2f}x" if flops(a) else "-"
        lines.append(f"{name:<22} {budget:>10.0f}  {count(a):>12} -> {count(b):<10}  {rc:>10}  "
                     f"{peak(a):>9.1f} -> {peak(b):<9.1f}  {flops(a):>10.2f} -> {flops(b):<10.2f}  {ratio:>10}")
    return lines


def frontier(profile) -> list[str]:
    """Per k: the least predicted peak that trains k full blocks, without and with recomputation (every choice
    of k blocks, and of which of them recompute), and the FLOPs of one step at that least peak."""
    n = profile.num_blocks
    best: dict[tuple[int, bool], tuple[int, int]] = {}
    for states in itertools.product((FROZEN, TRAINED, recompute_state(TRAINED)), repeat=n):
        k, rc = sum(s != FROZEN for s in states), any(is_recompute(s) for s in states)
        cost = compose(profile, states)
        entry = (cost.peak_bytes_predicted, cost.flops_forward + cost.flops_backward)
        for key in ((k, True), (k, False)) if not rc else ((k, True),):
            if key not in best or entry < best[key]:
                best[key] = entry
    lines = [f"{'trained blocks':>14}  {'least peak MiB plain':>20}  {'with recompute':>14}  {'saved':>6}  "
             f"{'GFLOP/step plain -> rc':>23}"]
    for k in range(1, n + 1):
        (plain, f_plain), (rc, f_rc) = best[(k, False)], best[(k, True)]
        lines.append(f"{k:>14}  {plain / 2**20:>20.1f}  {rc / 2**20:>14.1f}  {1 - rc / plain:>6.1%}  "
                     f"{f_plain / 1e9:>10.2f} -> {f_rc / 1e9:<10.2f}")
    return lines


def run_and_verify(plan_path: Path, out: Path) -> int:
    """One short round of the recompute plan on the drug reviews (every class trains), then verify."""
    cli = [sys.executable, "-m", "budgetplan"]
    run = subprocess.run([*cli, "run", str(plan_path), "--data", "drugreview", "--rounds", "1", "--clients", "8",
                          "--local-steps", "1", "--max-train", "160", "--max-test", "40", "--out", str(out)],
                         capture_output=True, text=True)
    if run.returncode:
        print(run.stdout[-2000:], run.stderr[-2000:])
        return run.returncode
    verify = subprocess.run([*cli, "verify", str(out), "--json"], capture_output=True, text=True)
    report = json.loads(verify.stdout) if verify.stdout.strip().startswith("{") else None
    if report is None:
        print(verify.stdout[-2000:], verify.stderr[-2000:])
        return verify.returncode or 1
    for c in report["classes"]:
        error = f"{c['peak_error']:+.2%}" if c["peak_error"] is not None else "-"
        print(f"  verify {c['name']:<22} {c['status']:<8} measured peak {c['measured_peak_bytes'] or 0:>12,} B "
              f"planned {c['predicted_peak_bytes'] or 0:>12,} B ({error}); FLOPs measured == planned: "
              f"{c['measured_flops'] == c['predicted_flops']}")
    print(f"  verify passed: {report['passed']}")
    return 0 if report["passed"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=BUNDLED_PROFILE_PATH)
    parser.add_argument("--demo-profile", action="store_true", help="profile MiniLM as the demo does (minutes)")
    parser.add_argument("--fleet", type=Path, action="append", help="fleet TOML (default: demo and mixed-edge)")
    parser.add_argument("--run", action="store_true", help="train the recompute plan briefly and verify it")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="recompute-gain-")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    profile = demo_profile(args.out / "profile.json") if args.demo_profile else read_profile(args.profile)
    if not any(is_recompute(s) for s in profile.block_state_names):
        print(f"{args.profile}: the profile has no +recompute states; re-profile it without --no-recompute")
        return 2
    c = profile.context
    print(f"{profile.model.name}, batch {c.batch_size}, seq {c.seq_len}, {c.optimizer}; objective layers; "
          "peaks and FLOPs derived from the profile's measured parts")
    print("\nmemory needed to train k full blocks (derived; every placement of the k blocks considered)")
    print("\n".join(frontier(profile)))
    status = 0
    for fleet_path in args.fleet or FLEETS:
        (plain_result, plain), (rc_result, recomputed) = solve(profile, fleet_path, False), solve(profile, fleet_path, True)
        print(f"\nfleet {fleet_path.name}: score (share-weighted blocks) {plain_result.chosen.score:.3f} -> "
              f"{rc_result.chosen.score:.3f}; {plain_result.status} / {rc_result.status}")
        print("\n".join(rows(plain, recomputed)))
        if args.run:
            plan_path = args.out / f"plan-{fleet_path.stem}.json"
            write_plan(recomputed, plan_path)
            status |= run_and_verify(plan_path, args.out / f"run-{fleet_path.stem}")
    return status


if __name__ == "__main__":
    sys.exit(main())
