"""Re-measure a recorded baseline of benchmarks/solve_scale.py with the code of a pinned commit.

The per-class CP-SAT planner (before the frontier) and the frontier planner before issue 22 are no longer in
the tree; their timings are recorded in solve_scale.RECORDED. This script takes the files of a commit that
still has them (`git archive`, into a temporary folder; the repository itself is not touched) and runs
- that commit's own benchmarks/solve_scale.py (arguments after --), whose CP-SAT baseline is
  benchmarks/cpsat_baseline at BASELINE_COMMIT (e.g. `-- --baseline-classes 50` to time 50 classes only), or
- with --frontier N [N ...], that commit's build_frontier on the 7-state profiles of N blocks (the table of
  issue 22), one size per line,
with PYTHONPATH set to the archived src/ and this interpreter. Run from the repository root:
  .venv/bin/python benchmarks/pinned_baseline.py --frontier 12 16
  .venv/bin/python benchmarks/pinned_baseline.py -- --baseline-classes 50
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

BASELINE_COMMIT = "5d23926"
FRONTIER = """
import sys, time
sys.path.insert(0, "benchmarks")
from solve_scale import with_recompute
from budgetplan.testing import make_transformer_profile
from budgetplan.solve.frontier import build_frontier
from budgetplan.solve.objective import make_objective
blocks = int(sys.argv[1])
profile = with_recompute(make_transformer_profile(num_blocks=blocks, lora_ranks=(4, 8)))
wall, cpu = time.perf_counter(), time.process_time()
built = build_frontier(profile, make_objective("layers", profile), row_limit=200_000)
print(f"{blocks} blocks x 7 states at the pinned commit (measured): {len(built)} rows, "
      f"{time.perf_counter() - wall:.2f} s wall / {time.process_time() - cpu:.2f} s CPU", flush=True)
"""


def archive(commit: str, into: Path) -> None:
    """The commit's files under `into` (git archive; fails with git's own message on an unknown commit)."""
    data = subprocess.run(["git", "archive", "--format=tar", commit], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default=BASELINE_COMMIT, help=f"the pinned commit (default {BASELINE_COMMIT})")
    parser.add_argument("--frontier", type=int, nargs="+", help="time that commit's frontier on these block counts")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then arguments for that commit's solve_scale.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="budgetplan-baseline-") as folder:
        root = Path(folder)
        try:
            archive(args.commit, root)
        except subprocess.CalledProcessError as exc:
            print(f"cannot read commit {args.commit}: {exc.stderr.decode().strip()}; run from the repository root "
                  "with a commit that exists", file=sys.stderr)
            return 2
        env = {**os.environ, "PYTHONPATH": str(root / "src")}
        if args.frontier:
            for blocks in args.frontier:
                subprocess.run([sys.executable, "-c", FRONTIER, str(blocks)], cwd=root, env=env, check=True)
            return 0
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        return subprocess.run([sys.executable, "benchmarks/solve_scale.py", *rest], cwd=root, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
