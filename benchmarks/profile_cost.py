"""What profiling costs: direct runs, distinct block measurements, and the ratio to one measured training step.

    python benchmarks/profile_cost.py               # bundled all-MiniLM-L6-v2, batch 32, seq 128, all states
    python benchmarks/profile_cost.py --quick       # batch 8, seq 64
    python benchmarks/profile_cost.py --with-peaks  # also the optional whole-step peaks of the standard configs

Baseline, in the same process: one steady-state training step of full fine-tuning under the live-tensor
tracker and the FLOP counter (what `profile` calls a measured step), and the same step untracked. Goal
(issue 10): profiling the six base states (frozen outside/in path, trained, LoRA 4/8/16) <= 3x one measured
step. Both ratios are printed: the six base states alone, and all ten (with the four +recompute states of
issue 15, measured by default). The FLOP line says how much computing the block measurements themselves
are (each state x boundary is one real forward/backward of the block, a +recompute one also runs the
forward again), in measured steps: no profile of all ten states can cost fewer steps than that on a
compute-bound machine. The second table shows
that a model whose blocks differ (two widths) measures each distinct block, and that runs do not grow with
identical blocks.
"""

from __future__ import annotations

import argparse
import copy
import os
import time

import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from transformers import AutoModel, BertConfig

from budgetplan.models import load_model, wrap_model
from budgetplan.profile.batch import make_batch
from budgetplan.profile.configure import apply_block_states
from budgetplan.profile.flops import OpCounter
from budgetplan.profile.measure import make_optimizer, optimizer_state_tensors
from budgetplan.profile.memory import LiveTracker, SavedTensors
from budgetplan.profile.profiler import ProfileRequest, profile_model

console = Console()


def step_seconds(loaded, request, tracked: bool) -> tuple[float, int]:
    """(seconds, counted FLOPs or 0 untracked) of one steady-state full fine-tuning step (after a warm-up step)."""
    fresh = copy.deepcopy(loaded)
    apply_block_states(fresh, ("trained",) * loaded.layout.num_blocks)
    model, batch = fresh.model.train(), make_batch(fresh, request.batch_size, request.seq_len)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], request.optimizer)

    def step():
        model(batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    started, counter = time.perf_counter(), OpCounter()
    if tracked:
        tracker, saved = LiveTracker(), SavedTensors(model.parameters())
        tracker.track([*model.parameters(), *model.buffers(), *batch.values(), *optimizer_state_tensors(optimizer)])
        with tracker, counter, saved:
            step()
    else:
        step()
    return time.perf_counter() - started, counter.flops


def block_run_flops(profile) -> int:
    """Counted FLOPs of the block measurements a profile made (one per distinct block, state and boundary)."""
    firsts = {}
    for block in profile.blocks:  # identical blocks share one measured cost object; count each once
        for costs in block.states.values():
            for cost in costs.values():
                firsts[id(cost)] = cost.flops_forward + cost.flops_backward
    return sum(firsts.values())


def timed_profile(loaded, request):
    started = time.perf_counter()
    profile = profile_model(loaded, request)
    return profile, time.perf_counter() - started


def main_model(batch: int, seq: int, with_peaks: bool) -> None:
    loaded = load_model("all-minilm-l6-v2", num_labels=3)
    request = ProfileRequest(batch_size=batch, seq_len=seq, lora_ranks=(4, 8, 16), measure_configs=False)
    tracked, step_flops = min(step_seconds(loaded, request, tracked=True) for _ in range(2))
    plain = min(step_seconds(loaded, request, tracked=False)[0] for _ in range(2))
    base, base_seconds = timed_profile(loaded, replace_request(request, recompute=False))
    profile, seconds = timed_profile(loaded, request)
    m, states = profile.measurement, len(request.block_states)
    console.print(f"all-MiniLM-L6-v2, batch {batch}, seq {seq}, {loaded.layout.num_blocks} blocks x {states} states "
                  f"({torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f})")
    console.print(f"  distinct blocks measured:       {int(m['distinct_blocks'])} of {loaded.layout.num_blocks}")
    console.print(f"  block measurements (runs):      {int(base.measurement['block_runs'])} base states, "
                  f"{int(m['block_runs'])} all states  (+4 pre/post runs each)")
    console.print(f"  one measured training step:     {tracked:.2f} s (full fine-tuning, steady state, tracked)")
    console.print(f"  one plain training step:        {plain:.2f} s (same step, untracked)")
    for label, p, s in (("6 base states", base, base_seconds), (f"all {states} states", profile, seconds)):
        console.print(f"  profiling, {label + ':':16s}{s:7.2f} s measured = {s / tracked:.2f}x measured step "
                      f"({s / plain:.2f}x plain); block runs compute {block_run_flops(p) / step_flops:.2f} "
                      "steps of FLOPs (derived)")
    console.print(f"  goal (issue 10, the 6 base states): ratio <= 3 -> {base_seconds / tracked:.2f}x; "
                  f"all {states} states: {seconds / tracked:.2f}x (recompute states add "
                  f"{seconds - base_seconds:.2f} s)")
    console.print(f"  configurations covered:         {states ** loaded.layout.num_blocks:,} (states^blocks)")
    if with_peaks:
        peaks = replace_request(request, measure_configs=True)
        profile, total = timed_profile(loaded, peaks)
        cost = profile.measurement["config_seconds"]
        console.print(f"  optional whole-step peaks:      {int(profile.measurement['config_runs'])} configurations in "
                      f"{cost:.2f} s = {cost / tracked:.1f} measured steps (profile --no-measure skips them)")


def replace_request(request, **changes):
    from dataclasses import replace

    return replace(request, **changes)


def distinct_table() -> None:
    table = Table(title="block measurements vs blocks (batch 2, seq 8, LoRA 4; measured runs)")
    for column in ("model", "blocks", "distinct", "block runs", "every-block runs"):
        table.add_column(column, justify="right")
    for name, loaded in (("4 identical", _tiny_bert(4)), ("8 identical", _tiny_bert(8)),
                         ("3 kinds (widths)", _two_widths())):
        request = ProfileRequest(batch_size=2, seq_len=8, lora_ranks=(4,), measure_configs=False)
        m = profile_model(loaded, request).measurement
        per_block = int(m["block_runs"]) // int(m["distinct_blocks"])
        table.add_row(name, str(loaded.layout.num_blocks), str(int(m["distinct_blocks"])), str(int(m["block_runs"])),
                      str(per_block * loaded.layout.num_blocks))
    console.print(table)


def _tiny_bert(layers: int):
    config = BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128)
    config._attn_implementation = "eager"
    return wrap_model(AutoModel.from_config(config), f"bert-{layers}", config=config)


class _Block(nn.Module):
    def __init__(self, width_in: int, width_out: int):
        super().__init__()
        self.norm = nn.LayerNorm(width_in)
        self.fc1, self.fc2 = nn.Linear(width_in, 2 * width_out), nn.Linear(2 * width_out, width_out)
        self.skip = nn.Linear(width_in, width_out) if width_in != width_out else nn.Identity()

    def forward(self, x):
        return self.skip(x) + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


class _Widths(nn.Module):
    """Six blocks of one class: three of width 64, one from 64 to 128, two of width 128."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(512, 64)
        widths = [(64, 64), (64, 64), (64, 64), (64, 128), (128, 128), (128, 128)]
        self.blocks = nn.ModuleList(_Block(a, b) for a, b in widths)
        self.norm = nn.LayerNorm(128)

    def forward(self, input_ids, attention_mask=None):
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def _two_widths():
    return wrap_model(_Widths(), "two-widths", blocks="blocks")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 8, seq 64")
    parser.add_argument("--with-peaks", action="store_true", help="also time the optional whole-step peaks")
    args = parser.parse_args()
    torch.manual_seed(0)
    main_model(8 if args.quick else 32, 64 if args.quick else 128, args.with_peaks)
    distinct_table()
