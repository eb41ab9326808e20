"""The shipped character model is really pretrained, ships its head, and the executor loads that head."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import AutoConfig, GPT2Model

from budgetplan.execute.data import ASSETS, CHAR_VOCAB, char_encoder
from budgetplan.execute.setup import resolve_model_spec
from budgetplan.execute.sources import PRETRAIN_PLAYS
from budgetplan.models import load_model
from budgetplan.models.load import TaskModel

CHECKPOINT = ASSETS / "shakespeare-char.pt"
# As You Like It (a fine-tuning play, never seen in pretraining): speeches of its four largest roles.
HELD_OUT = Path(__file__).parent / "data" / "shakespeare-heldout.txt"
SEQ_LEN = 64


def windows(loaded) -> torch.Tensor:
    ids = char_encoder(loaded.vocab_size)(HELD_OUT.read_text())
    count = (len(ids) - 1) // SEQ_LEN
    return ids[: count * SEQ_LEN + 1].unfold(0, SEQ_LEN + 1, SEQ_LEN)


def next_char_loss(model: TaskModel, rows: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return model({"input_ids": rows[:, :-1], "labels": rows[:, 1:]}).item()


def fresh_model(vocab_size: int) -> TaskModel:
    """The initialisation the pretraining script starts from: seeded GPT-2 body, fresh head."""
    saved = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    config = dict(saved["config"])
    config = AutoConfig.for_model(config.pop("model_type"), **config)
    torch.manual_seed(0)
    return TaskModel(GPT2Model(config), config.n_embd, vocab_size, task="lm")


def test_held_out_loss_is_far_below_the_random_baseline():
    loaded = load_model(str(CHECKPOINT), task="lm")
    rows = windows(loaded)
    uniform = math.log(loaded.vocab_size)
    assert uniform > 4.3 and len(rows) >= 50
    pretrained = next_char_loss(loaded.model, rows)
    fresh = next_char_loss(fresh_model(loaded.vocab_size), rows)
    assert fresh > 4.0  # a random model is about as bad as guessing uniformly
    assert pretrained < 2.5, f"held-out loss {pretrained:.3f} nats: the shipped model is not pretrained"


def test_weights_differ_from_a_fresh_initialisation():
    loaded = load_model(str(CHECKPOINT), task="lm")
    fresh = fresh_model(loaded.vocab_size).state_dict()
    diffs = [float((p - fresh[n]).abs().max()) for n, p in loaded.model.state_dict().items() if n in fresh]
    assert len(diffs) == len(fresh) and max(diffs) > 0.05
    assert sum(d > 0 for d in diffs) > 0.9 * len(diffs)  # nearly every tensor moved (not a copy of the init)


def test_checkpoint_ships_its_head_and_the_executor_loads_it():
    saved = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert saved.get("task") == "lm" and "head.weight" in saved["state_dict"]
    assert CHECKPOINT.stat().st_size < 5e6
    loaded = load_model(resolve_model_spec("shakespeare-char.pt"), task="lm")  # how a plan's model is resolved
    assert torch.equal(loaded.model.head.weight, saved["state_dict"]["head.weight"])
    assert torch.equal(loaded.model.head.bias, saved["state_dict"]["head.bias"])


def test_vocabulary_records_how_it_was_pretrained():
    vocab = json.loads(CHAR_VOCAB.read_text())
    record = vocab["pretraining"]
    assert record["plays"] == list(PRETRAIN_PLAYS) and record["steps"] > 0 and record["seconds"] > 0
    assert "as_you_like_it" not in record["plays"]
    assert record["held_out_loss_nats"] < 2.5
