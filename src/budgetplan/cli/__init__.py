"""The `budgetplan` command. Each stage's commands live in their own module here and only delegate.

This package and budgetplan.report are the only places that print; nothing else imports them.
"""

from __future__ import annotations

import typer

from budgetplan.cli import common

app = typer.Typer(
    name="budgetplan",
    help="Measure, plan and verify layer-wise federated fine-tuning on memory-, compute- and uplink-limited devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.callback()
def main() -> None:
    """Measure, plan and verify layer-wise federated fine-tuning on memory-, compute- and uplink-limited devices."""


common.register_all(app)

if __name__ == "__main__":  # pragma: no cover
    app()
