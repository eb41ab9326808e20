"""The `budgetplan` command. Each stage's commands live in their own module here and only delegate.

This package and budgetplan.report are the only places that print; nothing else imports them. Commands import
the stages inside their functions on purpose (start-up speed: `budgetplan --version` and `--help` load no torch);
each such import goes down the stages (tests/test_architecture.py checks).
"""

from __future__ import annotations

from typing import Optional

import typer

from budgetplan.cli import common
from budgetplan.cli.help_text import lay_out_help

app = typer.Typer(
    name="budgetplan",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main(
    version: Optional[bool] = typer.Option(None, "--version", callback=common.version_callback, is_eager=True,
                                           help="print budgetplan's version and exit"),
) -> None:
    """Measure, plan and verify layer-wise federated fine-tuning on memory-, compute- and uplink-limited devices.

    Example: budgetplan solve --device jetson-nano --json plan.json
    """


common.register_all(app)
lay_out_help(app)  # paragraphs whole, arguments described, the example last

if __name__ == "__main__":  # pragma: no cover
    app()
