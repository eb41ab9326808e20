"""The per-class CP-SAT planner that budgetplan used before the configuration frontier (solve/frontier.py),
kept unchanged apart from import paths so that benchmarks/solve_scale.py can time both in one run.

Not part of the package and not used by any command: on some profiles its presolve returns OPTIMAL below
the true optimum (issue 11; tests/data/cpsat-presolve-drops-optimum.pb.txt is one of its models)."""
