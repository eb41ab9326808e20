"""Tables and plots from benchmarks/accuracy_compare.py results: mean ± std, paired differences, 95% intervals.

    .venv/bin/python benchmarks/accuracy_report.py runs/accuracy/shakespeare-memory ... --out docs/accuracy

For each run directory: a Markdown table (final accuracy mean ± std over seeds, chosen lr and grid results,
paired difference to (b) CAFF last-k and to (c) LoRA with a 95% t interval over seeds) printed to stdout,
and a PNG of accuracy per round (mean line and min-max band per scheme, distinct markers and line styles;
the central reference dashed black) written to OUT/<task>-<fleet>.png.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

# Two-sided 95% Student t quantiles by degrees of freedom (scipy is not a dependency).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}
STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--"), ("X", "-.")]


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a - b over paired seeds and the half-width of its 95% t interval."""
    diff = np.asarray(a) - np.asarray(b)
    if len(diff) < 2:
        return float(diff.mean()), math.nan
    half = T95.get(len(diff) - 1, 1.96) * diff.std(ddof=1) / math.sqrt(len(diff))
    return float(diff.mean()), float(half)


def _states(states: dict) -> str:
    def short(s):
        return {"trained": "T", "frozen": "-", "frozen_outside": "-", "frozen_in_path": "-"}.get(
            s, s.replace("lora-", "L").replace("trained", "T").replace("+recompute", "+r"))
    return "; ".join(f"{name}: " + ("sits out" if v is None else "".join(short(s) + " " for s in v).strip())
                     for name, v in states.items())


def _pm(mean: float, half: float) -> str:
    return f"{mean:+.4f} ± {half:.4f}" if not math.isnan(half) else f"{mean:+.4f}"


def last_mean(curve: list[float], rounds: int = 3) -> float:
    tail = curve[-rounds:]
    return float(np.mean(tail))


def _ms(values) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def table(results: dict) -> str:
    skipped = {k: v for k, v in results["schemes"].items() if "skipped" in v}
    schemes = {k: v for k, v in results["schemes"].items() if "skipped" not in v}
    finals = {k: [c[-1] for c in v["curves"]] for k, v in schemes.items()}
    tails = {k: [last_mean(c) for c in v["curves"]] for k, v in schemes.items()}
    lines = ["| scheme | configuration per class (block 0 first; T trained, L8 LoRA-8, +r recompute, - frozen) "
             "| lr (grid: tuning score) | final accuracy | last-3-round accuracy | final loss (nats) "
             "| final vs (b) CAFF | final vs (c) LoRA | last-3 vs (b) CAFF |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, v in schemes.items():
        grid = ", ".join(f"{lr}: {acc:.3f}" for lr, acc in v["lr_grid"].items())
        grid += "; at the grid's edge" if v.get("interior") is False else ""
        vs = [_pm(*paired(finals[key], finals[ref])) if ref in finals and ref != key else "-" for ref in ("b", "c")]
        vs.append(_pm(*paired(tails[key], tails["b"])) if "b" in tails and key != "b" else "-")
        losses = _ms([c[-1] for c in v["loss_curves"]]) if "loss_curves" in v else "-"
        lines.append(f"| {v['label']} | {_states(v['states'])} | {v['lr']:g} ({grid}) | {_ms(finals[key])} | "
                     f"{_ms(tails[key])} | {losses} | {' | '.join(vs)} |")
    if "central" in results:
        c = results["central"]
        curve, half = c["curve"], max(1, len(c["curve"]) // 2)
        loss = f"{c['loss_curve'][-1]:.4f}" if "loss_curve" in c else "-"
        grid = ", ".join(f"{lr}: {acc:.3f}" for lr, acc in c.get("lr_grid", {}).items())
        lines.append(f"| {c['label']} (reference, one seed) | all blocks trained, data pooled "
                     f"| {c['lr']:g} ({grid}) | {curve[-1]:.4f} at round {len(curve)} ({curve[half - 1]:.4f} at "
                     f"round {half}) | {last_mean(curve):.4f} | {loss} | - | - | - |")
    for v in skipped.values():
        lines.append(f"| {v['label']} | not run: {v['skipped']} | - | - | - | - | - | - | - |")
    seeds = len(next(iter(schemes.values()))["curves"]) if schemes else 0
    lines.append(f"\nMean ± std over {seeds} seeds; \"vs\" columns: paired difference (same seed: same clients, data, "
                 f"batches) and its 95% Student-t half-width. Tuning score: mean held-out accuracy of the last "
                 f"{results.get('tune_rounds', 1)} rounds, averaged over the tuning seeds. Untrained model: "
                 f"{results['untrained_accuracy']:.4f}; majority label: {results['majority_accuracy']:.4f} (same test "
                 f"set)." + (f" Importance measured in {results['importance_seconds']:.1f} s."
                             if "importance_seconds" in results else ""))
    return "\n".join(lines)


def cost_to_target(curve: list[float], flops: list | None, upload: list | None, target: float) -> tuple:
    """(rounds, device FLOPs, upload bytes) until the held-out accuracy first reaches `target`; Nones when it
    never does (FLOPs None too when a round's FLOPs are unknown)."""
    for index, accuracy in enumerate(curve):
        if accuracy >= target:
            spent = (flops or [])[: index + 1]
            total_flops = sum(spent) if len(spent) == index + 1 and None not in spent else None
            sent = (upload or [])[: index + 1]
            return index + 1, total_flops, sum(sent) if len(sent) == index + 1 else None
    return None, None, None


def cost_table(results: dict, share: float) -> str:
    """Cost to target: rounds, device FLOPs and upload until share x the central reference's accuracy."""
    if "central" not in results:
        return ""
    target = share * last_mean(results["central"]["curve"])
    lines = [f"Cost to target: rounds, device training FLOPs (derived from the plan) and upload (measured) until "
             f"the held-out accuracy first reaches {share:.0%} of the central reference ({target:.4f}); mean over "
             "the seeds that reach it; paired differences over seeds where both reach it.", "",
             "| scheme | reached | rounds | device FLOPs | upload (MB) | rounds vs (b) CAFF | rounds vs (c) LoRA |",
             "|---|---|---|---|---|---|---|"]
    costs = {k: [cost_to_target(c, f, u, target) for c, f, u in
                 zip(v["curves"], v.get("flops_curves") or [None] * len(v["curves"]),
                     v.get("upload_curves") or [None] * len(v["curves"]))]
             for k, v in results["schemes"].items() if "curves" in v}
    for key, rows in costs.items():
        reached = [r for r in rows if r[0] is not None]

        def mean(i, scale=1.0):
            values = [r[i] for r in reached if r[i] is not None]
            return f"{np.mean(values) / scale:.3g}" if values else "-"

        vs = []
        for ref in ("b", "c"):
            pairs = [(a[0], b[0]) for a, b in zip(rows, costs.get(ref, [])) if a[0] is not None and b[0] is not None]
            vs.append(_pm(*paired(*zip(*pairs))) if ref != key and len(pairs) >= 2 else "-")
        lines.append(f"| {results['schemes'][key]['label']} | {len(reached)}/{len(rows)} | {mean(0)} | {mean(1)} | "
                     f"{mean(2, 1e6)} | {' | '.join(vs)} |")
    return "\n".join(lines)


def headroom_line(results: dict) -> str:
    h = results.get("headroom")
    if not h:
        return ""
    return (f"Headroom (central, pooled data): full fine-tuning {h['full']:.4f} vs head only {h['head']:.4f}, "
            f"{h['gap_se']:.1f} standard errors of the {h['test_examples']}-example test set (SE {h['se']:.4f}); "
            f"{'passes' if h['passes'] else 'fails'} the 3-SE check; converged: full {h['full_converged']}, "
            f"head {h['head_converged']}.")


def versus(all_results: dict[str, dict], scheme: str = "a") -> str:
    """One row per results set: the final-accuracy paired difference of `scheme` minus each other scheme."""
    others = ("b", "c", "d", "e", "g", "f")
    lines = [f"| results | {' | '.join(f'({scheme}) - ({o})' for o in others)} |", "|---" * (len(others) + 1) + "|"]
    for name, results in all_results.items():
        ran = {k: [c[-1] for c in v["curves"]] for k, v in results["schemes"].items() if "curves" in v}
        if scheme in ran:
            cells = [_pm(*paired(ran[scheme], ran[o])) if o in ran else "-" for o in others]
            lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    ran = [(k, v) for k, v in results["schemes"].items() if "skipped" not in v]
    for index, ((key, v), (marker, style)) in enumerate(zip(ran, STYLES)):
        curves = np.asarray([[results["untrained_accuracy"], *c] for c in v["curves"]])
        rounds = np.arange(curves.shape[1]) + 0.04 * (index - 3)  # offset so identical curves stay visible
        line, = ax.plot(rounds, curves.mean(0), marker=marker, linestyle=style, label=v["label"], markersize=4)
        ax.fill_between(rounds, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
    if "central" in results:
        curve = [results["untrained_accuracy"], *results["central"]["curve"]]
        ax.plot(range(len(curve)), curve, "k--", label=results["central"]["label"], linewidth=1)
    ax.axhline(results["majority_accuracy"], color="grey", linewidth=0.8, linestyle=":", label="majority label")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy" + (" (next character)" if results["task"] == "shakespeare" else ""))
    ax.set_title(f"{results['task']}, {results['fleet']}-bound fleet: mean over seeds, band = min..max over seeds;\nlines offset slightly in x so equal ones stay visible", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("docs/accuracy"))
    parser.add_argument("--target", type=float, default=0.95,
                        help="cost to target: this share of the central reference")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    merged: dict[str, dict] = {}
    for run_dir in args.runs:  # directories of one task and fleet (e.g. schemes run in parallel) are merged
        results = json.loads((run_dir / "results.json").read_text())
        name = "-".join(filter(None, (results["task"], results["fleet"], results.get("tag"))))
        if name in merged:
            merged[name]["schemes"].update(results["schemes"])
            merged[name].setdefault("central", results.get("central"))
            if merged[name]["central"] is None:
                merged[name].pop("central")
        else:
            merged[name] = results
    for name, results in merged.items():
        order = {k: i for i, k in enumerate(("a", "a'", "f", "b", "c", "d", "e", "g"))}
        results["schemes"] = dict(sorted(results["schemes"].items(), key=lambda kv: order.get(kv[0], 99)))
        plot(results, args.out / f"{name}.png")
        extra = "\n\n".join(filter(None, (headroom_line(results), cost_table(results, args.target))))
        print(f"### {name}\n\n{table(results)}\n\n{extra}\n\n![{name}](accuracy/{name}.png)\n")
    print(f"### (a) against each baseline, final accuracy\n\n{versus(merged)}\n")


if __name__ == "__main__":
    main()
