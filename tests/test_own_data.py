"""Your own model and data (issue 21 items 3-4): a saved HF classifier with its own tokenizer trained on a CSV /
JSON Lines / Parquet / save_to_disk file, model paths in a plan relative to the plan, `run --model`, bad input."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from tokenizers import BertWordPieceTokenizer
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.errors import DataError, ModelLoadError
from budgetplan.execute import sources
from budgetplan.execute.data import load_dataset
from budgetplan.execute.rounds import prepare
from budgetplan.execute.settings import RunConfig, TrainSettings
from budgetplan.execute.setup import trainable_names_of
from budgetplan.models import load_model
from budgetplan.models.tokenizer import TINY_TOKENIZER
from budgetplan.plan import ModelRef, Plan, PlanClass, PlanContext, read_plan, write_plan
from cli_helpers import assert_one_line_error

runner = CliRunner()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = {"pos": "great lovely fine happy good calm", "neg": "awful bad sad angry poor broken"}
SMALL = ["--rounds", "1", "--clients", "2", "--local-steps", "1", "--seq-len", "16", "--no-measure"]


def rows(n: int = 30) -> list[dict]:
    """n short texts: label pos or neg by their words, client a/b/c by row."""
    out = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        words = WORDS[label].split()
        out.append({"text": f"{words[i % 6]} day and {words[(i + 2) % 6]} night {i}", "label": label,
                    "site": "abc"[i % 3]})
    return out


def write_csv(path, data, columns=("text", "label", "site")):
    lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in data]
    path.write_text("\n".join(lines) + "\n")
    return path


def build_tokenizer(texts) -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer trained offline on `texts` (how a user's own tokenizer comes to be)."""
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(texts, vocab_size=100, min_frequency=1, special_tokens=SPECIAL)
    return PreTrainedTokenizerFast(tokenizer_object=trainer._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def save_classifier(folder, tokenizer=None, vocab_size: int = 128, **config):
    torch.manual_seed(0)
    base = dict(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=64, num_labels=2)
    BertForSequenceClassification(BertConfig(**{**base, **config})).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def plan_for(model_dir, plan_path, num_labels: int = 2):
    """A hand-made plan for the saved model: one class training its last block and head."""
    loaded = load_model(str(model_dir))
    states = ("frozen", "trained")
    plan_class = PlanClass(name="edge", share=1.0, block_states=states,
                           trainable_names=trainable_names_of(loaded, states))
    plan = Plan(model=ModelRef(name=model_dir.name, fingerprint=loaded.fingerprint, num_blocks=2,
                               spec=str(model_dir)),
                context=PlanContext(task="classification", num_labels=num_labels, batch_size=4, seq_len=16),
                classes=(plan_class,))
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    write_plan(plan, plan_path)
    return plan_path


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's folder: model/ (a saved BERT classifier + its own tokenizer), plan.json beside it, mydata.csv."""
    root = tmp_path_factory.mktemp("user")
    data = rows()
    tokenizer = build_tokenizer([r["text"] for r in data])
    model = save_classifier(root / "model", tokenizer)
    return {"root": root, "model": model, "plan": plan_for(model, root / "plan.json"), "tokenizer": tokenizer,
            "csv": write_csv(root / "mydata.csv", data), "rows": data}


def config(data, **kw) -> RunConfig:
    return RunConfig(data=str(data), rounds=1, clients=2, train=TrainSettings(local_steps=1, batch_size=4),
                     seq_len=16, measure=False, **kw)


def test_token_ids_fed_to_the_model_are_its_own_tokenizers(user):
    setup = prepare(read_plan(user["plan"]), config(user["csv"], client_column="site"))
    expected = user["tokenizer"]([r["text"] for r in user["rows"]], padding="max_length", truncation=True,
                                 max_length=16)["input_ids"]
    fed = setup.dataset.train.inputs["input_ids"].tolist() + setup.dataset.test.inputs["input_ids"].tolist()
    assert sorted(map(tuple, fed)) == sorted(map(tuple, expected))  # every row, exactly its tokenizer's ids
    assert max(max(r) for r in fed) < len(user["tokenizer"])
    labels = {tuple(ids): r["label"] for ids, r in zip(expected, user["rows"])}
    got = dict(zip(map(tuple, setup.dataset.train.inputs["input_ids"].tolist()), setup.dataset.train.labels.tolist()))
    assert all(["neg", "pos"][label] == labels[ids] for ids, label in got.items())  # sorted values: neg 0, pos 1
    assert len(setup.dataset.test) == 3 and setup.parts.kind.startswith("natural")  # 10% held out; sites split


def test_bundled_tiny_model_uses_the_bundled_tiny_tokenizer():
    loaded = load_model("tiny-bert", num_labels=3)  # vocabulary 512: assets/tiny-wordpiece-512, no folding
    data = load_dataset("drugreview", loaded, seq_len=16, max_train=8, max_test=4)
    train, test = sources.read_drugreview()
    encoded = AutoTokenizer.from_pretrained(TINY_TOKENIZER)(train.items + test.items, padding="max_length",
                                                            truncation=True, max_length=16)["input_ids"]
    fed = data.train.inputs["input_ids"].tolist() + data.test.inputs["input_ids"].tolist()
    assert set(map(tuple, fed)) <= set(map(tuple, encoded))


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "save_to_disk"])
def test_other_formats_read_the_same_rows(user, tmp_path, kind):
    pa = pytest.importorskip("pyarrow")
    data = user["rows"]
    if kind == "jsonl":
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    elif kind == "parquet":
        import pyarrow.parquet as pq

        path = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(data), path)
    else:  # the layout datasets' DatasetDict.save_to_disk writes: one Arrow stream per split
        path = tmp_path / "saved"
        for split, part in (("train", data[:24]), ("test", data[24:])):
            (path / split).mkdir(parents=True)
            with pa.OSFile(str(path / split / "data-00000-of-00001.arrow"), "wb") as sink:
                table = pa.Table.from_pylist(part)
                with pa.ipc.new_stream(sink, table.schema) as writer:
                    writer.write_table(table)
            (path / split / "state.json").write_text(json.dumps({"_data_files": [
                {"filename": "data-00000-of-00001.arrow"}]}))
        (path / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    setup = prepare(read_plan(user["plan"]), config(path))
    assert len(setup.dataset.train) + len(setup.dataset.test) == len(data)
    if kind == "save_to_disk":
        assert len(setup.dataset.test) == 6  # its own test split, not a held-out slice


def test_run_trains_the_users_classifier_from_another_folder(user, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the plan was made in user["root"]; run from elsewhere
    assert json.loads(user["plan"].read_text())["model"]["spec"] == "./model"  # stored relative to the plan
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(user["plan"]), "--data", str(user["csv"]), "--text-column", "text",
                                 "--label-column", "label", *SMALL, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "rounds.jsonl").read_text().splitlines()[0])
    assert record["trained"], record


def test_moved_model_needs_run_model_and_another_model_is_refused(user, tmp_path):
    moved = shutil.copytree(user["model"], tmp_path / "elsewhere" / "bert")
    plan = plan_for(moved, tmp_path / "plans" / "plan.json")
    assert json.loads(plan.read_text())["model"]["spec"] == str(moved.resolve())  # outside the plan's folder
    shutil.move(str(moved), str(tmp_path / "moved"))
    common = ["run", str(plan), "--data", str(user["csv"]), *SMALL]
    assert_one_line_error(runner.invoke(app, [*common, "--out", str(tmp_path / "r0")]), "--model PATH")
    result = runner.invoke(app, [*common, "--model", str(tmp_path / "moved"), "--out", str(tmp_path / "r1")])
    assert result.exit_code == 0, result.output
    other = save_classifier(tmp_path / "other", user["tokenizer"], hidden_size=16)
    result = runner.invoke(app, [*common, "--model", str(other), "--out", str(tmp_path / "r2")])
    assert_one_line_error(result, "--model", "another model")
    assert not (tmp_path / "r0").exists() and not (tmp_path / "r2").exists()


def test_plan_solved_from_a_profile_names_the_model_beside_it(user, tmp_path):
    import budgetplan

    folder = tmp_path / "project"
    model = shutil.copytree(user["model"], folder / "models" / "bert")
    profile = budgetplan.profile_model(str(model), batch_size=2, seq_len=8, lora_ranks=(), measure=False)
    assert profile.model.source == str(model.resolve())
    plan = budgetplan.solve_plan(profile, [budgetplan.device("jetson-nano")])
    write_plan(plan, folder / "plan.json")
    assert json.loads((folder / "plan.json").read_text())["model"]["spec"] == "./models/bert"
    moved = shutil.move(str(folder), str(tmp_path / "copied"))
    assert read_plan(f"{moved}/plan.json").model.load_spec == str((tmp_path / "copied/models/bert").resolve())


def bad(user, tmp_path, data, *extra, plan=None):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(plan or user["plan"]), "--data", str(data), *SMALL, *extra,
                                 "--out", str(out)])
    assert result.exit_code == 2 and not out.exists(), result.output
    return result


def test_missing_column(user, tmp_path):
    assert_one_line_error(bad(user, tmp_path, user["csv"], "--text-column", "body"), "no column 'body'", "text")


def test_empty_file(user, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,label\n")
    assert_one_line_error(bad(user, tmp_path, path), "no rows")


def test_too_many_labels(user, tmp_path):
    data = rows() + [{"text": "so so", "label": "meh", "site": "a"}]
    assert_one_line_error(bad(user, tmp_path, write_csv(tmp_path / "three.csv", data)), "3 label values", "2")


def test_unknown_label_of_a_model_with_named_labels(user, tmp_path):
    model = save_classifier(tmp_path / "named", user["tokenizer"], id2label={0: "bad", 1: "good"},
                            label2id={"bad": 0, "good": 1})
    plan = plan_for(model, tmp_path / "named-plan.json")
    assert_one_line_error(bad(user, tmp_path, user["csv"], plan=plan), "unknown label", "bad, good")


def test_model_without_a_tokenizer(user, tmp_path):
    model = save_classifier(tmp_path / "bare")  # vocabulary 128: no bundled tokenizer has it
    plan = plan_for(model, tmp_path / "bare-plan.json")
    assert_one_line_error(bad(user, tmp_path, user["csv"], plan=plan), "has no tokenizer", "--tokenizer")
    result = runner.invoke(app, ["run", str(plan), "--data", str(user["csv"]), *SMALL, "--tokenizer",
                                 str(user["model"]), "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output


def test_python_api_errors_are_typed(user, tmp_path):
    with pytest.raises(DataError, match="no column 'words'"):
        prepare(read_plan(user["plan"]), config(user["csv"], text_column="words"))
    with pytest.raises(ModelLoadError, match="no tokenizer files"):
        prepare(read_plan(user["plan"]), config(user["csv"], tokenizer=str(tmp_path)))


def test_flower_app_takes_the_data_file_and_model_override(user, tmp_path, monkeypatch):
    pytest.importorskip("flwr")
    import tomllib

    from budgetplan.integrations.flower.export import export_flower_app
    from budgetplan.integrations.flower.settings import run_config_from_values

    moved = shutil.copytree(user["model"], tmp_path / "copy")
    monkeypatch.chdir(user["root"])
    app_dir = tmp_path / "app"
    export_flower_app(read_plan(user["plan"]), config("mydata.csv", model="../" + moved.parent.name + "/copy"),
                      app_dir)
    values = tomllib.loads((app_dir / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert values["dataset"] == str(user["csv"].resolve()) and values["model"] == str(moved.resolve())
    monkeypatch.chdir(tmp_path)
    setup = prepare(read_plan(user["plan"]), run_config_from_values(values))  # what a ClientApp prepares
    assert setup.template.source == str(moved.resolve())


def test_compare_runs_schemes_on_the_users_data(user, tmp_path):
    import budgetplan

    profile = budgetplan.profile_model(str(user["model"]), batch_size=4, seq_len=16, lora_ranks=(), measure=False)
    budgetplan.write_profile(profile, tmp_path / "profile.json")
    plan = budgetplan.solve_plan(profile, [budgetplan.device("jetson-nano")])
    write_plan(plan, tmp_path / "plan.json")
    result = runner.invoke(app, ["compare", str(tmp_path / "plan.json"), "--profile", str(tmp_path / "profile.json"),
                                 "--data", str(user["csv"]), "--schemes", "budgetplan,head", "--seeds", "0",
                                 "--rounds", "1", "--clients", "2", "--local-steps", "1", "--seq-len", "16",
                                 "--out", str(tmp_path / "cmp"), "--json"])
    assert result.exit_code == 0, result.output
    summaries = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [s["scheme"] for s in summaries] == ["budgetplan", "head"]


def test_language_modelling_on_a_text_file_predicts_next_tokens(tmp_path):
    loaded = load_model("tiny-gpt2", task="lm")  # vocabulary 512: the bundled tiny tokenizer
    states = ("frozen", "frozen", "frozen", "trained")
    plan = Plan(model=ModelRef(name="tiny-gpt2", fingerprint=loaded.fingerprint, num_blocks=4),
                context=PlanContext(task="lm", num_labels=512, batch_size=4, seq_len=16),
                classes=(PlanClass(name="edge", share=1.0, block_states=states,
                                   trainable_names=trainable_names_of(loaded, states)),))
    path = tmp_path / "lines.jsonl"
    path.write_text("".join(json.dumps({"text": r["text"], "label": "ignored"}) + "\n" for r in rows(20)))
    setup = prepare(plan, config(path))
    train = setup.dataset.train
    ids, labels, mask = train.inputs["input_ids"], train.labels, train.inputs["attention_mask"]
    assert torch.equal(labels[:, :-1][mask[:, 1:] == 1], ids[:, 1:][mask[:, 1:] == 1])  # the next token
    assert (labels == -100).any() and bool((labels[mask == 0] == -100).all())  # padding is never a target
    write_plan(plan, tmp_path / "lm.json")
    result = runner.invoke(app, ["run", str(tmp_path / "lm.json"), "--data", str(path), *SMALL,
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output


def test_gpt2_classifier_whose_tokenizer_and_config_have_no_padding(user, tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=user["tokenizer"].backend_tokenizer, unk_token="[UNK]",
                                        eos_token="[SEP]")  # no pad token, as GPT-2's own tokenizer
    torch.manual_seed(0)
    GPT2ForSequenceClassification(GPT2Config(vocab_size=128, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                             num_labels=2)).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    plan = plan_for(tmp_path / "gpt2", tmp_path / "plan.json")
    result = runner.invoke(app, ["run", str(plan), "--data", str(user["csv"]), *SMALL, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output  # pads with eos; the model's config learns that id to pool by


def test_image_classifier_on_a_csv_of_image_files(tmp_path):
    from PIL import Image

    loaded = load_model("tiny-vit", num_labels=2)  # 32 x 32 RGB
    states = ("frozen", "frozen", "frozen", "trained")
    plan = Plan(model=ModelRef(name="tiny-vit", fingerprint=loaded.fingerprint, num_blocks=4),
                context=PlanContext(task="classification", num_labels=2, batch_size=4, image_size=32),
                classes=(PlanClass(name="edge", share=1.0, block_states=states,
                                   trainable_names=trainable_names_of(loaded, states)),))
    (tmp_path / "img").mkdir()
    lines = ["file,kind"]
    for i in range(12):  # dark and bright squares of 16 x 16, resized to the model's 32
        Image.new("RGB", (16, 16), (40 + i, 0, 0) if i % 2 else (255, 250 - i, 255)).save(tmp_path / f"img/{i}.png")
        lines.append(f"img/{i}.png,{'dark' if i % 2 else 'bright'}")
    (tmp_path / "images.csv").write_text("\n".join(lines) + "\n")
    setup = prepare(plan, config(tmp_path / "images.csv", image_column="file", label_column="kind"))
    pixels, labels = setup.dataset.train.inputs["pixel_values"], setup.dataset.train.labels
    assert pixels.shape[1:] == (3, 32, 32) and float(pixels.min()) >= -1 and float(pixels.max()) <= 1
    assert bool((pixels[labels == 0].mean(dim=(1, 2, 3)) > pixels[labels == 1].mean(dim=(1, 2, 3)).max()).all())
    write_plan(plan, tmp_path / "vit.json")
    result = runner.invoke(app, ["run", str(tmp_path / "vit.json"), "--data", str(tmp_path / "images.csv"),
                                 "--image-column", "file", "--label-column", "kind", *SMALL,
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
