"""Users' own task models keep their own head and weights (save_pretrained directory and {"config",
"state_dict"} file); only a bare base model gets budgetplan's head, and the profile says which."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AlbertConfig,
    AutoModel,
    BertConfig,
    BertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    ViTConfig,
    ViTForImageClassification,
)
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.errors import ConfigError
from budgetplan.models import load_model, save_model_file
from budgetplan.profile.batch import make_batch
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.profile.types import SCHEMA_VERSION
from cli_helpers import assert_one_line_error
from profile_checks import assert_composition_exact

REQUEST = ProfileRequest(batch_size=2, seq_len=8, lora_ranks=(4,), measure_configs=False)
MIXED = [("lora-4", "frozen", "trained", "frozen")]


def _classifier() -> BertForSequenceClassification:
    config = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)
    torch.manual_seed(1)
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 3.0)  # "trained": far from any fresh initialisation
    return model.eval()


def _save(model, tmp_path, form: str) -> str:
    if form == "dir":
        model.save_pretrained(tmp_path / "model")
        return str(tmp_path / "model")
    path = tmp_path / "model.pt"
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, path)
    return str(path)


def _same_logits(loaded, model, batch) -> bool:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    loaded.model.eval()
    with torch.no_grad():
        return torch.allclose(loaded.model.logits(batch), model(**inputs).logits, atol=1e-6)  # eager vs sdpa


@pytest.mark.parametrize("form", ["dir", "dict"])
def test_saved_hf_classifier_is_profiled_with_its_own_head(tmp_path, form):
    model = _classifier()
    loaded = load_model(_save(model, tmp_path, form))
    assert loaded.model.head is None and loaded.model.head_source == "model"
    assert (loaded.model.task, loaded.model.num_labels) == ("classification", 3)
    assert torch.equal(loaded.model.base.classifier.weight, model.classifier.weight)
    assert _same_logits(loaded, model, make_batch(loaded, 2, 8))
    profile = profile_model(loaded, REQUEST)
    assert profile.context.head_source == "model" and profile.context.num_labels == 3
    assert "base.classifier.weight" in profile.post_trainable_names
    assert "base.bert.pooler.dense.weight" in profile.post_trainable_names  # its own pooler, kept
    assert_composition_exact(loaded, profile, REQUEST, MIXED)


@pytest.mark.parametrize("form", ["dir", "dict"])
def test_vit_classifier_and_causal_lm_keep_their_heads(tmp_path, form):
    vit = ViTForImageClassification(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                              intermediate_size=64, image_size=16, patch_size=8, num_labels=5))
    (tmp_path / "vit").mkdir()
    loaded = load_model(_save(vit.eval(), tmp_path / "vit", form))
    assert (loaded.model.head_source, loaded.model.num_labels, loaded.input_kind) == ("model", 5, "image")
    assert _same_logits(loaded, vit, make_batch(loaded, 2))
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64))
    (tmp_path / "lm").mkdir()
    loaded = load_model(_save(lm.eval(), tmp_path / "lm", form))
    assert (loaded.model.head_source, loaded.model.task, loaded.model.num_labels) == ("model", "lm", 96)
    assert _same_logits(loaded, lm, make_batch(loaded, 2, 8))


def test_bare_base_model_gets_budgetplans_head_and_the_profile_says_so(tmp_path):
    base = AutoModel.from_config(BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=64))
    base.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), num_labels=4)
    assert loaded.model.head_source == "budgetplan" and loaded.model.head.out_features == 4
    assert profile_model(loaded, REQUEST).context.head_source == "budgetplan"


def test_budgetplan_model_file_of_a_task_model_round_trips(tmp_path):
    loaded = load_model(_save(_classifier(), tmp_path, "dir"))
    save_model_file(loaded, tmp_path / "again.pt")
    again = load_model(str(tmp_path / "again.pt"))
    assert again.model.head_source == "model" and again.fingerprint == loaded.fingerprint


def test_bf16_checkpoint_stays_bf16(tmp_path):
    model = _classifier().to(torch.bfloat16)
    for form in ("dir", "dict"):
        (tmp_path / form).mkdir()
        loaded = load_model(_save(model, tmp_path / form, form))
        assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}, form


def test_contradicting_task_or_labels_are_refused(tmp_path):
    spec = _save(_classifier(), tmp_path, "dir")
    with pytest.raises(ConfigError, match="own classification head"):
        load_model(spec, task="lm")
    with pytest.raises(ConfigError, match="--num-labels 7: the model's own head has 3 outputs"):
        load_model(spec, num_labels=7)
    result = CliRunner().invoke(app, ["profile", spec, "--task", "lm", "--batch-size", "2", "--seq-len", "8"])
    assert_one_line_error(result, "own classification head", "--task")


def test_cli_refuses_albert_shared_blocks_in_one_line(tmp_path):
    config = AlbertConfig(vocab_size=128, embedding_size=16, hidden_size=32, num_hidden_layers=4,
                          num_hidden_groups=2, num_attention_heads=4, intermediate_size=64)
    AutoModel.from_config(config).save_pretrained(tmp_path)
    result = CliRunner().invoke(app, ["profile", str(tmp_path), "--batch-size", "2", "--seq-len", "8"])
    assert_one_line_error(result, "runs 2 times in one forward", "ALBERT")


def test_cli_profile_of_own_classifier_reports_its_head(tmp_path):
    spec = _save(_classifier(), tmp_path, "dict")
    result = CliRunner().invoke(app, ["profile", spec, "--batch-size", "2", "--seq-len", "8", "--lora-ranks", "",
                                      "--no-measure"])
    assert result.exit_code == 0, result.output
    assert "own classification head" in result.output


def test_budgetplan_model_file_remembers_its_task(tmp_path):
    loaded = load_model("tiny-gpt2", task="lm")
    save_model_file(loaded, tmp_path / "lm.pt")
    again = load_model(str(tmp_path / "lm.pt"))
    assert (again.model.task, again.model.head_source, again.model.num_labels) == ("lm", "budgetplan", 512)


def test_profile_json_1_1_round_trips_head_source_and_1_0_still_reads(tmp_path):
    from budgetplan.profile.io import BUNDLED_PROFILE_PATH, read_profile, write_profile

    old = read_profile(BUNDLED_PROFILE_PATH)
    assert old.context.head_source == "budgetplan"  # the bundled profile (re-measured at 1.3 with +int8 states)
    profile = profile_model(load_model(_save(_classifier(), tmp_path, "dict")), REQUEST)
    write_profile(profile, tmp_path / "p.json")
    again = read_profile(tmp_path / "p.json")
    assert again.schema_version == SCHEMA_VERSION and again.context.head_source == "model"
    assert again.measurement["distinct_blocks"] == 1
