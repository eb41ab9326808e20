"""apply() on a causal LM follows Hugging Face's convention (issue 21 item 5): labels = input ids, shifted inside the
model, -100 ignored; checked against the HF model's own loss and trained by an HF Trainer with the standard collator."""

from __future__ import annotations

import pytest
import torch
from transformers import (DataCollatorForLanguageModeling, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, Trainer, TrainingArguments)

import budgetplan
from budgetplan.execute.setup import trainable_names_of
from budgetplan.models.tokenizer import TINY_TOKENIZER
from budgetplan.plan import ModelRef, Plan, PlanClass, PlanContext

SMALL = dict(vocab_size=512, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
MODELS = {
    "gpt2": lambda: GPT2LMHeadModel(GPT2Config(vocab_size=512, n_embd=32, n_layer=2, n_head=2, n_positions=64)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(hidden_size=32, max_position_embeddings=64,
                                                  num_key_value_heads=1, **SMALL)),
}
TEXTS = ["the drug helped my pain a lot", "no change after two weeks", "bad headache and nausea",
         "works well for me, calm nights", "it made me tired", "good sleep again"]


def planned(kind: str):
    """An HF causal LM with its own head, applied to a one-class plan that trains its last block (and head)."""
    torch.manual_seed(0)
    hf = MODELS[kind]()
    task = budgetplan.load(hf)
    states = ("frozen", "trained")
    plan_class = PlanClass(name="edge", share=1.0, block_states=states,
                           trainable_names=trainable_names_of(task, states))
    plan = Plan(model=ModelRef(name=kind, fingerprint=task.fingerprint, num_blocks=2),
                context=PlanContext(task="lm", num_labels=512, batch_size=2, seq_len=16), classes=(plan_class,))
    return hf, budgetplan.apply(plan, task, "edge")


def collated():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TINY_TOKENIZER)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    return tokenizer, collator, [tokenizer(t) for t in TEXTS]


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_loss_equals_the_hf_models_own_with_padding_ignored(kind):
    hf, model = planned(kind)
    _, collator, rows = collated()
    batch = collator(rows)  # padded to the longest; labels = input_ids with -100 at the padding
    assert (batch["labels"] == -100).any()
    hf.eval(), model.eval()
    with torch.no_grad():
        ours = model(**batch).loss
        reference = hf(**batch).loss  # transformers shifts inside and ignores -100
        unshifted = torch.nn.functional.cross_entropy(model(**batch).logits.reshape(-1, 512),
                                                      batch["labels"].reshape(-1))
    assert torch.allclose(ours, reference, atol=1e-6), (float(ours), float(reference))
    assert not torch.allclose(ours, unshifted, atol=1e-3)  # predicting the current token is another loss


def test_hf_trainer_with_the_lm_collator_trains_the_planned_blocks(tmp_path):
    _, model = planned("gpt2")
    _, collator, rows = collated()
    before = {n: p.detach().clone() for n, p in model.task_model.named_parameters() if p.requires_grad}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=3, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", learning_rate=1e-2)
    batch = collator(rows)
    first = float(model(**batch).loss)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    changed = {n for n, p in model.task_model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert changed and changed <= set(model.trainable_names)
    assert float(model(**batch).loss) < first
