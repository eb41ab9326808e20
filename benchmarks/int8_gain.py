"""What memory-bound classes gain when the solver may hold frozen weights in int8, at what FLOP cost.

Per fleet, the same profile is solved twice with the `layers` objective: with the +int8 states (and frozen
embeddings in int8 where that trains more) and without them (`solve --no-quantized`); +recompute states are
offered both times. Every number is derived from the profile's measured parts (peaks are composed predictions;
`--run` measures them): blocks trained, blocks and embeddings held in int8, trainable parameters, predicted
peak, GFLOP of one step. With `--run` the int8 plan is trained for one short round on the drug reviews through
the CLI (`budgetplan run`) and `budgetplan verify` checks every class against the plan.

  .venv/bin/python benchmarks/int8_gain.py                       # bundled MiniLM profile, demo + mixed-edge
  .venv/bin/python benchmarks/int8_gain.py --demo-profile --run  # MiniLM as `budgetplan demo` profiles it
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from budgetplan.api import solve_fleet_offered
from budgetplan.plan import SolverSettings, plan_from_fleet, write_plan
from budgetplan.profile.io import BUNDLED_PROFILE_PATH, read_profile, write_profile
from budgetplan.profile.compose import compose
from budgetplan.profile.types import (
    FROZEN_OUTSIDE, PRE_INT8, can_quantize, is_quantized, is_trainable, quantized_state, with_int8_embeddings,
)
from budgetplan.solve import read_fleet
from recompute_gain import run_and_verify

ROOT = Path(__file__).resolve().parents[1]
FLEETS = (ROOT / "profiles" / "fleets" / "demo.toml", ROOT / "profiles" / "fleets" / "mixed-edge.toml")


def demo_profile(out: Path):
    """MiniLM profiled as `budgetplan demo` does (batch 8, its sequence length, AdamW, LoRA 4 and 8)."""
    from budgetplan.cli.demo_cmd import DEMO_DATA, DEMO_MODEL, DEMO_SEQ_LEN
    from budgetplan.execute.data import dataset_info
    from budgetplan.models import load_model
    from budgetplan.profile.profiler import ProfileRequest, profile_model

    loaded = load_model(DEMO_MODEL, num_labels=dataset_info(DEMO_DATA).num_labels)
    profile = profile_model(loaded, ProfileRequest(batch_size=8, seq_len=DEMO_SEQ_LEN, optimizer="adamw",
                                                   lora_ranks=(4, 8), measure_configs=False))
    write_profile(profile, out)
    return profile


def solve(profile, fleet_path: Path, quantized: bool):
    settings = SolverSettings("layers", False, 10.0, 0, 1, True, quantized)
    result = solve_fleet_offered([profile], read_fleet(fleet_path), settings)
    return result, plan_from_fleet(result, settings, profile.model.name)


def _summary(entry: dict) -> tuple:
    """(trained blocks, LoRA blocks, int8 blocks, embeddings int8, trainable params, peak MiB, GFLOP/step)."""
    if not entry["active"]:
        return None
    states, p = entry["block_states"], entry["predicted"]
    return (sum(s.startswith("trained") for s in states), sum(is_trainable(s) and not s.startswith("trained")
                                                                for s in states),
            sum(is_quantized(s) for s in states), entry.get("int8_embeddings", False), p["trainable_params"],
            p["peak_bytes"] / 2**20, (p["flops_forward"] + p["flops_backward"]) / 1e9)


def rows(plain, int8) -> list[str]:
    plain, int8 = plain.to_dict(), int8.to_dict()
    lines = [f"{'class':<22} {'memory MiB':>10}  {'trained+LoRA plain -> int8':>26}  {'int8 blocks/emb':>15}  "
             f"{'trainable params':>21}  {'peak MiB plain -> int8':>22}  {'GFLOP/step plain -> int8':>24}"]
    for name, a in plain["classes"].items():
        b, budget = int8["classes"][name], a["budget"]["memory_bytes"] / 2**20
        sa, sb = _summary(a), _summary(b)
        if sa is None and sb is None:
            lines.append(f"{name:<22} {budget:>10.0f}  nothing fits either way")
            continue
        sa = sa or (0, 0, 0, False, 0, 0.0, 0.0)
        sb = sb or (0, 0, 0, False, 0, 0.0, 0.0)
        lines.append(f"{name:<22} {budget:>10.0f}  {f'{sa[0]}+{sa[1]}':>12} -> {f'{sb[0]}+{sb[1]}':<11}  "
                     f"{sb[2]:>8}/{'yes' if sb[3] else 'no':<6}  {sa[4]:>10,} -> {sb[4]:<10,}  "
                     f"{sa[5]:>9.1f} -> {sb[5]:<10.1f}  {sa[6]:>10.2f} -> {sb[6]:<10.2f}")
    return lines


def same_config_saving(profile, plain) -> list[str]:
    """Per class: its plain configuration with every frozen and LoRA block, and the embeddings, held in int8
    (the same training): the derived peak and FLOPs, and what int8 saves and adds."""
    int8_profile = with_int8_embeddings(profile) or profile
    lines = [f"{'class':<22} {'plain peak MiB':>14}  {'same in int8':>12}  {'saved MiB':>9}  {'FLOPs added':>12}"]
    for c in plain.classes:
        if not c.active:
            continue
        states = tuple(quantized_state(s) if can_quantize(s) and not is_quantized(s) else s for s in c.block_states)
        a, b = compose(profile, c.block_states), compose(int8_profile, states)
        added = (b.flops_forward + b.flops_backward) - (a.flops_forward + a.flops_backward)
        lines.append(f"{c.name:<22} {a.peak_bytes_predicted / 2**20:>14.1f}  {b.peak_bytes_predicted / 2**20:>12.1f}  "
                     f"{(a.peak_bytes_predicted - b.peak_bytes_predicted) / 2**20:>9.1f}  {added:>12,}")
    return lines


def dequant_flops(profile) -> str:
    """FLOPs one dequantisation pass adds, from the measured parts of block 0 and the embeddings."""
    block = profile.blocks[0].states
    forward = block["frozen_outside+int8"]["no_input_grad"].flops_forward - block["frozen_outside"]["no_input_grad"].flops_forward
    backward = (block["frozen_in_path+int8"]["input_grad"].flops_backward
                - block["frozen_in_path"]["input_grad"].flops_backward)
    text = f"per int8 block: +{forward:,} FLOPs forward, +{backward:,} backward when the gradient passes through it"
    if PRE_INT8 in profile.pre:
        pre = profile.pre[PRE_INT8]["no_input_grad"].flops_forward - profile.pre[FROZEN_OUTSIDE]["no_input_grad"].flops_forward
        text += f"; int8 embeddings: +{pre:,} FLOPs forward (the gathered rows only)"
    return text + " (measured parts, one multiply per dequantised element)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=BUNDLED_PROFILE_PATH)
    parser.add_argument("--demo-profile", action="store_true", help="profile MiniLM as the demo does (minutes)")
    parser.add_argument("--fleet", type=Path, action="append", help="fleet TOML (default: demo and mixed-edge)")
    parser.add_argument("--run", action="store_true", help="train the int8 plan briefly and verify it")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="int8-gain-")))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    profile = demo_profile(args.out / "profile.json") if args.demo_profile else read_profile(args.profile)
    if not any(is_quantized(s) for s in profile.block_state_names):
        print(f"{args.profile}: the profile has no +int8 states; re-profile it without --no-quantized")
        return 2
    c = profile.context
    print(f"{profile.model.name}, batch {c.batch_size}, seq {c.seq_len}, {c.optimizer}; objective layers; "
          "+recompute offered in both; peaks and FLOPs derived from the profile's measured parts")
    print(dequant_flops(profile))
    status = 0
    for fleet_path in args.fleet or FLEETS:
        (plain_result, plain), (int8_result, int8) = solve(profile, fleet_path, False), solve(profile, fleet_path, True)
        print(f"\nfleet {fleet_path.name}: score (share-weighted blocks) {plain_result.chosen.score:.3f} -> "
              f"{int8_result.chosen.score:.3f}")
        print("\n".join(rows(plain, int8)))
        print("the plain plan's configurations with frozen/LoRA blocks and embeddings in int8 (derived):")
        print("\n".join(same_config_saving(profile, plain)))
        if args.run:
            plan_path = args.out / f"plan-{fleet_path.stem}.json"
            write_plan(int8, plan_path)
            status |= run_and_verify(plan_path, args.out / f"run-{fleet_path.stem}")
    return status


if __name__ == "__main__":
    sys.exit(main())
