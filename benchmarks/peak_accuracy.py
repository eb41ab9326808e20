"""Predicted (derived) vs measured peak of one training step, worst case over the standard configurations.

    .venv/bin/python benchmarks/peak_accuracy.py

Tiny BERT/ViT/GPT-2 at the tests' context (batch 4, seq 16, LoRA rank 4, AdamW), profiled and measured now; and the
bundled all-MiniLM-L6-v2 profile (batch 32, seq 128), whose measured peaks were recorded when it was profiled.
"""
import torch
torch.set_num_threads(1)
from budgetplan.models import load_model
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.profile.io import read_profile
from budgetplan.profile.compose import compose

def worst(profile):
    rows = []
    for c in profile.configs:
        pred = compose(profile, c.block_states).peak_bytes_predicted
        if c.peak_bytes_measured:
            rows.append(((pred - c.peak_bytes_measured) / c.peak_bytes_measured, c.block_states, pred, c.peak_bytes_measured))
    return max(rows, key=lambda r: abs(r[0]))

for name in ("tiny-bert", "tiny-vit", "tiny-gpt2"):
    p = profile_model(load_model(name), ProfileRequest(batch_size=4, seq_len=16, lora_ranks=(4,)))
    print(name, "worst %+.2f%%" % (100 * worst(p)[0]), worst(p)[1])
p = read_profile("src/budgetplan/assets/minilm-profile.json")
w = worst(p)
print("minilm bundled", "worst %+.2f%%" % (100 * w[0]), w[1], w[2], w[3])
