"""Issue 25 item 4: accuracy of the memory-bound cell's plan with the +int8 states (scheme a) against the same
budgets without them (scheme h), paired by seed, read from the accuracy benchmark's run folders.

    PYTHONPATH=src:benchmarks .venv/bin/python benchmarks/accuracy_compare.py --task minilm --fleets memory \\
        --schemes a,h --lora-lr-scale 10 --head-lr-scale 10 --tune-seeds 100,101 --seeds 0,1,2,3,4,5,6,7 \\
        --workers 2 --tag int8
    .venv/bin/python benchmarks/int8_accuracy.py runs/accuracy/minilm-runs

A run is scheme a's when its plan holds some block or the embeddings in int8, else h's (both are `layers`
plans of the same profile and budgets; tuning seeds, >= 100, are left out). Held-out accuracy after the last
round and averaged over the last three, per seed, and a - h with a 95% paired t interval (measured accuracies,
derived differences).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def runs(folder: Path, rounds: int) -> dict[tuple[str, int], list[float]]:
    out = {}
    for run in sorted(p for p in folder.iterdir() if (p / "plan.json").is_file()):
        plan = json.loads((run / "plan.json").read_text())
        seed = json.loads((run / "run.json").read_text())["config"].get("seed")
        lines = (run / "rounds.jsonl").read_text().splitlines() if (run / "rounds.jsonl").is_file() else []
        if plan.get("label") != "layers" or seed is None or seed >= 100 or len(lines) < rounds:
            continue
        classes = plan["classes"].values()
        int8 = any("+int8" in s for c in classes for s in c["block_states"]) or any(c.get("int8_embeddings")
                                                                                  for c in classes)
        out[("a" if int8 else "h", seed)] = [json.loads(line)["accuracy"] for line in lines]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--rounds", type=int, default=8, help="a reported run's rounds")
    args = parser.parse_args()
    found = runs(args.folder, args.rounds)
    seeds = sorted(s for k, s in found if k == "a" and ("h", s) in found)
    print(f"seeds with both runs: {seeds}")
    scores = (("after the last round", lambda c: c[-1]), ("mean of the last three", lambda c: sum(c[-3:]) / 3))
    for name, score in scores:
        a, h = ([score(found[(k, s)]) for s in seeds] for k in ("a", "h"))
        diff = [x - y for x, y in zip(a, h)]
        half = T95[len(diff) - 1] * statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else math.nan
        print(f"{name} (measured): a with int8 {statistics.mean(a):.4f}, h without {statistics.mean(h):.4f}; "
              f"a - h {statistics.mean(diff):+.4f} +/- {half:.4f} (95% paired, derived)")
        print("  a: " + " ".join(f"{x:.4f}" for x in a) + "\n  h: " + " ".join(f"{x:.4f}" for x in h))


if __name__ == "__main__":
    main()
