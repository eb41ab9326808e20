"""`python -m budgetplan` runs the CLI."""

from budgetplan.cli import app

app()
