"""What profiling costs: direct runs used, wall time, and the ratio to one measured training step.

    python benchmarks/profile_cost.py            # bundled all-MiniLM-L6-v2, batch 32, seq 128
    python benchmarks/profile_cost.py --quick    # batch 8, seq 64

Runs are counted as they happen (one progress tick per direct run). The second table shows that runs grow
with blocks x states while the number of configurations they cover grows exponentially.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from rich.console import Console
from rich.table import Table
from transformers import AutoModel, BertConfig

from budgetplan.models import load_model
from budgetplan.models.layout import find_blocks
from budgetplan.profile.batch import make_batch
from budgetplan.profile.configure import apply_block_states
from budgetplan.profile.measure import measure_training_step
from budgetplan.profile.profiler import ProfileRequest, profile_model

console = Console()


def timed_profile(loaded, request) -> tuple[int, float]:
    runs = 0

    def tick(_):
        nonlocal runs
        runs += 1

    started = time.perf_counter()
    profile_model(loaded, request, tick=tick)
    return runs, time.perf_counter() - started


def one_step_seconds(loaded, request) -> float:
    fresh = copy.deepcopy(loaded)
    apply_block_states(fresh, ("trained",) * loaded.layout.num_blocks)
    batch = make_batch(fresh, request.batch_size, request.seq_len)
    started = time.perf_counter()
    measure_training_step(fresh.model, batch, request.optimizer)
    return time.perf_counter() - started


def main_model(batch: int, seq: int) -> None:
    loaded = load_model("all-minilm-l6-v2", num_labels=3)
    request = ProfileRequest(batch_size=batch, seq_len=seq, lora_ranks=(4, 8, 16), measure_configs=False)
    step = one_step_seconds(loaded, request)
    runs, seconds = timed_profile(loaded, request)
    states = len(request.block_states)
    console.print(f"all-MiniLM-L6-v2, batch {batch}, seq {seq}, {loaded.layout.num_blocks} blocks x {states} states")
    console.print(f"  direct runs used:            {runs}")
    console.print(f"  profiling wall time:         {seconds:.1f} s")
    console.print(f"  one measured training step:  {step:.2f} s (full fine-tuning, steady state, tracked)")
    console.print(f"  ratio profile / step:        {seconds / step:.1f}x")
    console.print(f"  configurations covered:      {states ** loaded.layout.num_blocks:,} (states^blocks)")


def scaling_table() -> None:
    table = Table(title="direct runs vs model size (tiny BERT, batch 2, seq 8)")
    for column in ("blocks", "LoRA ranks", "states", "direct runs", "configurations covered"):
        table.add_column(column, justify="right")
    for layers in (2, 4, 8):
        for ranks in ((), (4,), (4, 8)):
            loaded = _tiny_bert(layers)
            request = ProfileRequest(batch_size=2, seq_len=8, lora_ranks=ranks, measure_configs=False)
            runs, _ = timed_profile(loaded, request)
            states = len(request.block_states)
            table.add_row(str(layers), ",".join(map(str, ranks)) or "-", str(states), str(runs), f"{states ** layers:,}")
    console.print(table)


def _tiny_bert(layers: int):
    loaded = load_model("tiny-bert")
    config = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128)
    config._attn_implementation = "eager"
    base = AutoModel.from_config(config)
    base.pooler = None
    loaded.model.base = base
    return type(loaded)(**{**loaded.__dict__, "layout": find_blocks(loaded.model)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, seq 64")
    args = parser.parse_args()
    torch.manual_seed(0)
    main_model(8 if args.quick else 32, 64 if args.quick else 128)
    scaling_table()
