"""What budgetplan prints: rich tables (planning.py: before a run, runs.py: a run and after), the console that
shows them whole (console.py), units and escaping (text.py), the compare plot (plots.py). Only the CLI imports
this package."""
