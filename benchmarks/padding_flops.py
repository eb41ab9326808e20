"""FLOPs of one training step with a full-length batch and with one padded position (the attention-mask path).

transformers 5 skips the attention mask when it is all ones; with any padding it builds the mask and adds it to
every block's attention scores. Profiles are measured on full-length batches, so a padded real batch costs this
much more than planned.

  .venv/bin/python benchmarks/padding_flops.py all-minilm-l6-v2 8 64
"""

import sys

import torch

from budgetplan.models import load_model
from budgetplan.profile.batch import make_batch
from budgetplan.profile.flops import OpCounter


def step_flops(model, batch) -> tuple[int, dict]:
    model.zero_grad(set_to_none=True)  # a second backward would otherwise add each gradient into the first (add_)
    counter = OpCounter()
    with counter:
        out = model(batch)
        (out if torch.is_tensor(out) else out["loss"]).backward()
    return counter.flops, dict(counter.flops_by_op)


def main() -> None:
    name, batch_size, seq_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    loaded = load_model(name, num_labels=3)
    full = make_batch(loaded, batch_size, seq_len)
    padded = dict(full, attention_mask=full["attention_mask"].clone())
    padded["attention_mask"][-1, -1] = 0
    (a, by_a), (b, by_b) = step_flops(loaded.model, full), step_flops(loaded.model, padded)
    print(f"{name} batch {batch_size} x {seq_len}: full-length {a:,} FLOPs (measured), one padded position {b:,} "
          f"(measured): {b - a:+,} ({(b - a) / a:+.4%})")
    for op in sorted(set(by_a) | set(by_b)):
        if by_a.get(op, 0) != by_b.get(op, 0):
            print(f"  {op:<20} {by_a.get(op, 0):>14,} -> {by_b.get(op, 0):,}")


if __name__ == "__main__":
    main()
