"""Your own data as columns: a local CSV / TSV, JSON Lines, Parquet file, or a `datasets` save_to_disk folder.

`read_splits(path)` returns the file's rows as named columns, per split: a file is one split ("all"); a folder
written by `DatasetDict.save_to_disk` keeps its own splits ("train", "test", ...); one written by
`Dataset.save_to_disk` is one split. CSV and JSON Lines need nothing beyond Python; Parquet and save_to_disk
folders (Arrow files) need pyarrow: `pip install "budgetplan[data]"`. Labels become ids by `label_ids`.
No torch here: the CLI can check a data file before it loads the heavy stack.
"""

from __future__ import annotations

import csv
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from budgetplan.errors import DataError, ExtraMissingError, first_line

DATA_EXTRA = 'pip install "budgetplan[data]"'
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
ALL = "all"  # the one split of a file without splits of its own


@dataclass(frozen=True)
class Table:
    origin: str  # the file (and split) it was read from, for messages
    columns: dict[str, list]  # column name -> one value per row

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def column(self, name: str, option: str) -> list:
        """One column's values; DataError naming the option (e.g. --text-column) and the columns there are."""
        if name not in self.columns:
            raise DataError(f"{self.origin} has no column '{name}' ({option}); its columns are: "
                            f"{', '.join(self.columns) or 'none'}; name one of them with {option}")
        return self.columns[name]


def is_data_path(data: str) -> bool:
    """Whether --data names a local file or folder rather than a bundled dataset."""
    return Path(data).exists() or Path(data).suffix.lower() in TABLE_SUFFIXES or "/" in data


def read_splits(path: str | Path) -> dict[str, Table]:
    """Every split of a data file or save_to_disk folder; DataError for a missing, empty or unreadable one."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {path} does not exist; give a CSV, JSON Lines or Parquet file, a datasets "
                        "save_to_disk folder, or a bundled dataset name")
    if path.is_dir():
        splits = _read_folder(path)
    else:
        splits = {ALL: Table(str(path), _read_file(path))}
    for table in splits.values():
        if not table.columns or table.num_rows == 0:
            raise DataError(f"{table.origin} has no rows; give a file with a header and at least one example")
    return splits


def _read_file(path: Path) -> dict[str, list]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            return _read_csv(path, "\t" if suffix == ".tsv" else ",")
        if suffix in (".jsonl", ".json"):
            return _read_json_lines(path)
        if suffix == ".parquet":
            return _pyarrow("parquet", path).read_table(path).to_pydict()
    except (UnicodeDecodeError, csv.Error, json.JSONDecodeError, OSError, ValueError) as exc:
        raise DataError(f"{path} cannot be read as {suffix[1:]} ({first_line(exc, 120)}); save it as UTF-8 "
                        f"{suffix[1:]}") from None
    raise DataError(f"{path}: unknown data file type '{suffix}'; use .csv, .tsv, .jsonl, .parquet or a datasets "
                    "save_to_disk folder")


def _read_csv(path: Path, delimiter: str) -> dict[str, list]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        rows = list(reader)
        names = [n for n in (reader.fieldnames or []) if n is not None]
    return {name: [row.get(name) for row in rows] for name in names}


def _read_json_lines(path: Path) -> dict[str, list]:
    """JSON Lines (one object per line), or a .json file holding one list of objects."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not all(isinstance(row, dict) for row in rows):
        raise ValueError("every line must be one JSON object")
    names = list(dict.fromkeys(name for row in rows for name in row))
    return {name: [row.get(name) for row in rows] for name in names}


def _read_folder(path: Path) -> dict[str, Table]:
    """A save_to_disk folder: DatasetDict (dataset_dict.json naming its splits) or one Dataset (state.json)."""
    if (path / "dataset_dict.json").is_file():
        names = json.loads((path / "dataset_dict.json").read_text())["splits"]
        return {name: Table(f"{path} (split {name})", _read_arrow_dataset(path / name)) for name in names}
    return {ALL: Table(str(path), _read_arrow_dataset(path))}


def _read_arrow_dataset(folder: Path) -> dict[str, list]:
    state = folder / "state.json"
    if not state.is_file():
        raise DataError(f"{folder} is a folder without state.json or dataset_dict.json; give a folder written "
                        "by datasets' save_to_disk, or a data file")
    ipc = _pyarrow("ipc", folder)
    columns: dict[str, list] = {}
    for item in json.loads(state.read_text())["_data_files"]:
        with open(folder / item["filename"], "rb") as handle:
            part = ipc.open_stream(handle).read_all().to_pydict()
        for name, values in part.items():
            columns.setdefault(name, []).extend(values)
    return columns


def _pyarrow(module: str, path: Path):
    try:
        return importlib.import_module(f"pyarrow.{module}")
    except ImportError:
        raise ExtraMissingError(f"reading {path} needs pyarrow; install it with: {DATA_EXTRA}") from None


# ---- labels ------------------------------------------------------------------------------------------------


def label_order(values: list, option: str, origin: str) -> tuple:
    """The label values in their id order: sorted unique values (numbers by value when every value is a whole
    number, else as text). An empty cell is refused naming its row."""
    for row, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{origin}: row {row + 1} has no label in column {option}; fill it in or drop the row")
    keys = [str(v).strip() for v in values]
    if all(_is_int(k) for k in keys):
        return tuple(sorted(set(keys), key=int))
    return tuple(sorted(set(keys)))


def label_ids(values: list, order: tuple, origin: str, option: str) -> np.ndarray:
    """Each value's id: its index in `order`; a value outside it is refused in one line."""
    index = {name: i for i, name in enumerate(order)}
    out = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        key = "" if value is None else str(value).strip()
        if key not in index:
            raise DataError(f"{origin}: unknown label {key!r} in column {option} (row {row + 1}); the model's "
                            f"labels are: {', '.join(order)}; fix the value or use a model with this label")
        out[row] = index[key]
    return out


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
