"""budgetplan in process: profile a model you hold in memory, plan two device classes, train one class's
configuration with a plain PyTorch loop, and average the upload layer-wise, all without the CLI.

    .venv/bin/python examples/in_process.py [WORK_DIR]

The model here is a small 4-block BERT built from a transformers config (SDPA attention, as transformers 5
builds it: budgetplan switches it to eager so every FLOP is counted). Use your own pretrained base model.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

import budgetplan

HERE = Path(__file__).resolve().parent


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    task = budgetplan.load(BertModel(config), num_labels=3)
    batch = {"input_ids": torch.randint(0, 1000, (4, 32)), "attention_mask": torch.ones(4, 32, dtype=torch.long),
             "labels": torch.randint(0, 3, (4,))}
    profile = budgetplan.profile_model(task, batch, lora_ranks=(4,), measure=False)
    board = budgetplan.device(HERE / "my-board.toml")
    plan = budgetplan.solve_plan(profile, [board, "jetson-nano"])
    for c in plan.classes:
        print(f"{c.name}: {'active' if c.active else 'sits out'}, blocks {' '.join(c.block_states)}")

    model = budgetplan.apply(plan, task, board.name)  # frozen blocks and LoRA as the plan says
    global_state = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(3):
        loss = model(**batch).loss  # what an HF Trainer calls, too
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"step {step}: loss {loss.item():.4f}")
    merged = budgetplan.layerwise_mean(global_state, [(model.upload(), len(batch["labels"]))])
    changed = sum(not torch.equal(merged[n], global_state[n]) for n in merged)
    print(f"{board.name} trained {len(model.trainable_names)} tensors; {changed} changed in the merged global state")
    budgetplan.write_plan(plan, work / "plan.json")
    print(f"plan written to {work / 'plan.json'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="budgetplan-")))
