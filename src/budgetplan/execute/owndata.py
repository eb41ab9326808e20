"""A run's data: a bundled dataset (execute/data.py) or your own file (execute/tables.py), encoded for the model.

Your own data: a text column (`--text-column`, default "text"; for an image model `--image-column`, default
"image": image file paths relative to the data file, or image bytes as `datasets`' Image feature stores them, read
with Pillow, converted to the model's channels, resized to its image size, scaled to [-1, 1]), for classification
a label column
(`--label-column`, default "label") and optionally a client column (`--client-column`: one natural client per
value, packed onto the fleet's clients like drug reviews' conditions). Texts are tokenized with the model's own
tokenizer (models/tokenizer.py), padded or cut to seq_len. Label ids: the model's own label names where its config
has them (id2label other than LABEL_0, LABEL_1, ...), else the sorted unique values of the column (whole numbers
by value, else as text); more values than the model's (or the plan's) labels, or a value the model does not name,
is refused in one line. Splits: a save_to_disk DatasetDict's "train" and "test" (or "validation"); otherwise a
seeded 10% of the rows (at least one) is held out. Language modelling: each row is one example, its tokens
predicting their next token; padding is ignored by the loss (label -100).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from budgetplan.errors import DataError
from budgetplan.execute import data as bundled_data
from budgetplan.execute import images, tables
from budgetplan.execute.data import Dataset, DatasetInfo, Examples
from budgetplan.execute.settings import RunConfig
from budgetplan.execute.sources import RawSplit
from budgetplan.models.load import LoadedModel
from budgetplan.models.tokenizer import load_tokenizer
from budgetplan.validate import check_seq_len

IGNORE = -100  # label of a position the loss skips (padding), as in Hugging Face
TEST_SPLITS = ("test", "validation")


@dataclass(frozen=True)
class OwnData:
    """A data file read and checked: its splits, the columns used, the label values in id order."""

    info: DatasetInfo
    splits: dict[str, tables.Table]
    text: str  # the inputs' column: texts, or images for an image model
    label: str | None
    client: str | None
    order: tuple[str, ...] | None  # label values by id (None: language modelling)
    folder: Path  # where relative image paths start: the data file's folder (or the save_to_disk folder)


def run_info(config: RunConfig, task: str, num_labels: int | None,
             input_kind: str = "text") -> tuple[DatasetInfo, OwnData | None]:
    """What the run's --data is: a bundled dataset's info, or a data file read and checked (and its info)."""
    if not tables.is_data_path(config.data):
        return bundled_data.dataset_info(config.data), None
    own = read_own(config, task, num_labels, input_kind)
    return own.info, own


def plan_info(config: RunConfig, plan) -> tuple[DatasetInfo, OwnData | None]:
    """run_info for a plan: its task, label count and input kind (a plan profiled with an image size: images)."""
    ctx = plan.context
    return run_info(config, ctx.task, ctx.num_labels, "image" if ctx.image_size else "text")


def with_absolute_paths(config: RunConfig) -> RunConfig:
    """The config with its data file, model and tokenizer paths absolute (for a run in another working directory,
    e.g. an exported Flower app); names that are not paths (bundled datasets) unchanged."""
    changes = {}
    if tables.is_data_path(config.data):
        changes["data"] = str(Path(config.data).resolve())
    for name in ("model", "tokenizer"):
        value = getattr(config, name)
        if value is not None and Path(value).exists():
            changes[name] = str(Path(value).resolve())
    return replace(config, **changes)


def read_own(config: RunConfig, task: str, num_labels: int | None, input_kind: str = "text") -> OwnData:
    """Read `config.data` and check its columns and labels against the task and the plan's label count."""
    splits = tables.read_splits(config.data)
    image = input_kind == "image"
    text = (config.image_column or "image") if image else (config.text_column or "text")
    label = (config.label_column or "label") if task == "classification" else None
    for table in splits.values():
        table.column(text, "--image-column" if image else "--text-column")
        if label is not None:
            table.column(label, "--label-column")
        if config.client_column:
            table.column(config.client_column, "--client-column")
    order = None
    if label is not None:
        values = [v for table in splits.values() for v in table.columns[label]]
        order = tables.label_order(values, label, str(config.data))
        _check_count(order, num_labels, "the plan's", config.data)
    natural = f"value of column {config.client_column}" if config.client_column else None
    info = DatasetInfo(Path(config.data).name, task, input_kind, num_labels or (len(order) if order else None),
                       natural, tables.DATA_EXTRA)
    path = Path(config.data)
    return OwnData(info, splits, text, label, config.client_column, order, path if path.is_dir() else path.parent)


def _check_count(order: tuple, num_labels: int | None, whose: str, origin) -> None:
    if num_labels is not None and len(order) > num_labels:
        shown = ", ".join(order[:6]) + (", ..." if len(order) > 6 else "")
        raise DataError(f"{origin} has {len(order)} label values ({shown}) but {whose} model has {num_labels} "
                        "labels; drop the extra labels, or profile and solve again with --num-labels "
                        f"{len(order)}")


def run_dataset(config: RunConfig, own: OwnData | None, template: LoadedModel, seq_len: int) -> Dataset:
    """The run's dataset encoded for `template` (bundled or own), sliced by the config's seed."""
    if own is None:
        return bundled_data.load_dataset(config.data, template, seq_len=seq_len, data_dir=config.data_dir,
                                         max_train=config.max_train, max_test=config.max_test, seed=config.seed,
                                         tokenizer=config.tokenizer)
    return encode_own(own, template, seq_len=seq_len, tokenizer=config.tokenizer, max_train=config.max_train,
                      max_test=config.max_test, seed=config.seed)


def encode_own(own: OwnData, loaded: LoadedModel, *, seq_len: int, tokenizer: str | None = None,
               max_train: int | None = None, max_test: int | None = None, seed: int = 0) -> Dataset:
    """Split, slice and tokenize a data file for `loaded` (see the module docstring)."""
    check_seq_len(seq_len, loaded.max_positions, loaded.name)
    if loaded.input_kind != own.info.input_kind:
        raise DataError(f"the plan's data are {own.info.input_kind}s but model {loaded.name} takes "
                        f"{loaded.input_kind}s; use a plan made for this model")
    order = model_label_order(own, loaded)
    train, test = _train_test(own, order, seed)
    rng = np.random.default_rng(seed)
    train, test = bundled_data._limit(train, max_train, rng), bundled_data._limit(test, max_test, rng)
    if loaded.input_kind == "image":
        return Dataset(own.info, images.image_examples(train, loaded, own.folder),
                       images.image_examples(test, loaded, own.folder))
    encode_with = load_tokenizer(loaded, tokenizer)
    encode = _lm_examples if own.label is None else _classification_examples
    return Dataset(own.info, encode(train, encode_with, seq_len), encode(test, encode_with, seq_len))


def model_label_order(own: OwnData, loaded: LoadedModel) -> tuple[str, ...] | None:
    """The label values by id: the model's own names when it has them, else the data's sorted values."""
    if own.order is None:
        return None
    names = named_labels(loaded)
    if names is not None:
        return names
    _check_count(own.order, loaded.model.num_labels, f"model {loaded.name}:", own.info.name)
    return own.order


def named_labels(loaded: LoadedModel) -> tuple[str, ...] | None:
    """A saved classifier's label names (config.id2label by id), unless they are the default LABEL_i."""
    config = getattr(loaded.model.base, "config", None)
    id2label = getattr(config, "id2label", None) or {}
    if loaded.model.head is not None or len(id2label) != loaded.model.num_labels:
        return None
    names = tuple(str(id2label[i]) for i in sorted(id2label, key=int))
    return None if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


def _train_test(own: OwnData, order, seed: int) -> tuple[RawSplit, RawSplit]:
    splits = own.splits
    test_name = next((name for name in TEST_SPLITS if name in splits), None)
    if "train" in splits and test_name is not None:
        return _raw(own, splits["train"], order), _raw(own, splits[test_name], order)
    rows = _raw(own, next(iter(splits.values())) if len(splits) == 1 else _joined(splits), order)
    if len(rows.items) < 2:
        raise DataError(f"{own.info.name} has {len(rows.items)} row; give at least 2 (one is held out for testing)")
    permuted = np.random.default_rng(seed).permutation(len(rows.items))
    cut = max(1, len(permuted) // 10)
    return bundled_data._pick(rows, permuted[cut:]), bundled_data._pick(rows, permuted[:cut])


def _joined(splits: dict[str, tables.Table]) -> tables.Table:
    names = next(iter(splits.values())).columns
    return tables.Table(", ".join(t.origin for t in splits.values()),
                        {name: [v for t in splits.values() for v in t.columns[name]] for name in names})


def _raw(own: OwnData, table: tables.Table, order) -> RawSplit:
    texts = ["" if v is None else str(v) for v in table.columns[own.text]]
    if order is None:
        labels = np.zeros(len(texts), dtype=np.int64)
    else:
        labels = tables.label_ids(table.columns[own.label], order, table.origin, own.label)
    groups = None if own.client is None else tuple(str(v) for v in table.columns[own.client])
    return RawSplit(texts, labels, groups)


def _classification_examples(raw: RawSplit, tokenizer, seq_len: int) -> Examples:
    return Examples(bundled_data.tokenize(tokenizer, raw.items, seq_len), torch.as_tensor(raw.labels), raw.groups)


def _lm_examples(raw: RawSplit, tokenizer, seq_len: int) -> Examples:
    """Each row's first seq_len + 1 tokens: inputs are all but the last, labels the next token (padding -100)."""
    encoded = bundled_data.tokenize(tokenizer, raw.items, seq_len + 1)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE)
    return Examples({"input_ids": ids[:, :-1].contiguous(), "attention_mask": mask[:, :-1].contiguous()},
                    labels.contiguous(), raw.groups)
