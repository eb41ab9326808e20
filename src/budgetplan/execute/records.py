"""What a run produces, typed: a class's first-step measurement, each client's outcome in a round, the round's
record (one line of rounds.jsonl) and the run's result.

`to_dict`/`from_dict` here are the only code that turns these records into JSON-ready dicts and back, and the
functions at the bottom the only readers and writers of rounds.jsonl and measurements.json (the checkpoint keeps
the same JSON text). The dict layout is the one these files have always had, key order included, so a file
written before these types existed loads, and one written now is byte for byte what the old writer wrote.

Units are in the field names (`peak_bytes`, `upload_bytes`, `seconds`); every measured number says so
(`Measurement.source`), and a round's FLOPs say which are planned (derived) and which measured.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROUNDS_FILE = "rounds.jsonl"
MEASUREMENTS_FILE = "measurements.json"


@dataclass(frozen=True)
class Measurement:
    """A class's first local step measured on real data at the plan's batch size, or why it was not measured."""

    peak_bytes: int | None = None  # live-tensor peak of the step
    flops_forward: int | None = None
    flops_backward: int | None = None
    upload_bytes: int | None = None  # bytes of the tensors the class trains and uploads
    batch_size: int | None = None
    seq_len: int | None = None  # None for inputs without a sequence (pixel values)
    optimizer: str | None = None
    uncounted_ops: Mapping[str, int] = field(default_factory=dict)  # ops without a FLOP formula -> calls
    source: str = "measured"
    error: str | None = None  # set when the class could not be measured; every count is then None

    @classmethod
    def failed(cls, error: str) -> Measurement:
        return cls(error=error)

    @property
    def flops_per_step(self) -> int | None:
        """Forward + backward FLOPs of one local step, or None when not measured."""
        if self.flops_forward is None or self.flops_backward is None:
            return None
        return self.flops_forward + self.flops_backward

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        return {"peak_bytes": self.peak_bytes, "flops_forward": self.flops_forward,
                "flops_backward": self.flops_backward, "upload_bytes": self.upload_bytes,
                "batch_size": self.batch_size, "seq_len": self.seq_len, "optimizer": self.optimizer,
                "uncounted_ops": dict(self.uncounted_ops), "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        if "error" in data:
            return cls.failed(str(data["error"]))
        return cls(peak_bytes=data.get("peak_bytes"), flops_forward=data.get("flops_forward"),
                   flops_backward=data.get("flops_backward"), upload_bytes=data.get("upload_bytes"),
                   batch_size=data.get("batch_size"), seq_len=data.get("seq_len"), optimizer=data.get("optimizer"),
                   uncounted_ops=dict(data.get("uncounted_ops") or {}), source=data.get("source", "measured"))


@dataclass(frozen=True)
class TrainedClient:
    """A client whose upload was averaged into the round's model; its numbers are measured on the client."""

    client: int
    class_name: str
    num_examples: int
    upload_bytes: float | None = None  # bytes of the tensors it sent (a float, as the client reports its metrics)
    loss_first: float | None = None  # training loss of its first and last local step
    loss_last: float | None = None
    seconds: float | None = None  # its local training wall time
    extra: Mapping[str, float] = field(default_factory=dict)  # any further metric a node reported
    samples: int | None = None  # samples it trained this round (steps x batch), as it reports them
    weight: float | None = None  # its weight in the round's layer-wise mean (aggregation weights); None: older run
    rung: int | None = None  # the rung of its class's ladder it trained (0: the plan); None in older files

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"client": self.client, "class": self.class_name, "num_examples": self.num_examples}
        for key in ("loss_first", "loss_last", "seconds", "upload_bytes", "samples", "weight", "rung"):  # unsent: out
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainedClient:
        known = ("client", "class", "num_examples", "loss_first", "loss_last", "seconds", "upload_bytes", "samples",
                 "weight", "rung")
        samples, rung = data.get("samples"), data.get("rung")  # floats where a Flower node sent them as metrics
        return cls(client=int(data["client"]), class_name=str(data["class"]), num_examples=int(data["num_examples"]),
                   upload_bytes=data.get("upload_bytes"), loss_first=data.get("loss_first"),
                   loss_last=data.get("loss_last"), seconds=data.get("seconds"),
                   samples=None if samples is None else int(samples), weight=data.get("weight"),
                   extra={k: v for k, v in data.items() if k not in known}, rung=None if rung is None else int(rung))

    @property
    def measurement_key(self) -> str:
        return measurement_key(self.class_name, self.rung or 0)


def measurement_key(class_name: str, rung: int) -> str:
    """Where measurements.json keeps a rung's first-step measurement: the class's name for its plan (rung 0),
    'NAME@rungN' for a fallback rung (measured the first time a client trains it)."""
    return class_name if rung == 0 else f"{class_name}@rung{rung}"


@dataclass(frozen=True)
class DroppedClient:
    """A sampled client whose work did not reach the model this round, with the one-line reason."""

    client: int
    class_name: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"client": self.client, "class": self.class_name, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DroppedClient:
        return cls(client=int(data["client"]), class_name=str(data["class"]), reason=str(data["reason"]))


@dataclass(frozen=True)
class RoundRecord:
    """One round as rounds.jsonl holds it: who was sampled, who trained or dropped, and the new model's scores.

    accuracy and loss are measured on the held-out test set; flops_planned is derived from the plan's predicted
    per-step FLOPs, flops_measured from the run's measured first step (None when a trained class lacks one).
    """

    round: int
    sampled: tuple[int, ...]
    trained: tuple[TrainedClient, ...]
    dropped: tuple[DroppedClient, ...]
    accuracy: float
    loss: float | None  # None only in a hand-written file that lacks it
    upload_bytes: int  # sum over the trained clients' uploads
    flops_planned: int | None
    flops_measured: int | None
    seconds: float | None  # wall time of the whole round
    engine: str | None = None  # "embedded" or "flower"

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "sampled": list(self.sampled), "trained": [t.to_dict() for t in self.trained],
                "dropped": [d.to_dict() for d in self.dropped], "accuracy": self.accuracy, "loss": self.loss,
                "upload_bytes": self.upload_bytes, "flops_planned": self.flops_planned,
                "flops_measured": self.flops_measured, "seconds": self.seconds, "engine": self.engine}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RoundRecord:
        return cls(round=int(data["round"]), sampled=tuple(int(c) for c in data.get("sampled", ())),
                   trained=tuple(TrainedClient.from_dict(t) for t in data.get("trained", ())),
                   dropped=tuple(DroppedClient.from_dict(d) for d in data.get("dropped", ())),
                   accuracy=float(data["accuracy"]), loss=_number(data.get("loss")),
                   upload_bytes=int(data.get("upload_bytes", 0)), flops_planned=data.get("flops_planned"),
                   flops_measured=data.get("flops_measured"), seconds=_number(data.get("seconds")),
                   engine=data.get("engine"))


def _number(value) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class RunResult:
    """A finished (or continued) run: its directory, every round so far, the measurements and the final weights."""

    run_dir: Path
    history: tuple[RoundRecord, ...]
    measurements: Mapping[str, Measurement]
    global_state: dict


# ---- the files ----------------------------------------------------------------------------------------------

def rounds_to_json(history: Iterable[RoundRecord]) -> str:
    """A list of round records as one JSON text (the checkpoint's history)."""
    return json.dumps([r.to_dict() for r in history])


def rounds_from_json(data: list) -> tuple[RoundRecord, ...]:
    """Round records from parsed JSON: the checkpoint's history, or rounds.jsonl's lines."""
    return tuple(RoundRecord.from_dict(r) for r in data)


def rounds_line(record: RoundRecord) -> str:
    """One line of rounds.jsonl, newline included."""
    return json.dumps(record.to_dict()) + "\n"


def read_rounds(path: Path) -> tuple[RoundRecord, ...]:
    """The round records of a rounds.jsonl (blank lines skipped)."""
    lines = Path(path).read_text().splitlines()
    return rounds_from_json([json.loads(line) for line in lines if line.strip()])


def write_rounds(path: Path, history: Iterable[RoundRecord]) -> None:
    Path(path).write_text("".join(rounds_line(r) for r in history))


def append_round(path: Path, record: RoundRecord) -> None:
    with open(path, "a") as log:
        log.write(rounds_line(record))


def measurements_to_dict(measurements: Mapping[str, Measurement]) -> dict[str, dict]:
    return {name: m.to_dict() for name, m in measurements.items()}


def measurements_to_json(measurements: Mapping[str, Measurement]) -> str:
    """The measurements as one JSON text (the checkpoint's measurements)."""
    return json.dumps(measurements_to_dict(measurements))


def measurements_from_dict(data: Mapping[str, Mapping]) -> dict[str, Measurement]:
    return {str(name): Measurement.from_dict(m) for name, m in data.items()}


def write_measurements(path: Path, measurements: Mapping[str, Measurement]) -> None:
    Path(path).write_text(json.dumps(measurements_to_dict(measurements), indent=1) + "\n")
