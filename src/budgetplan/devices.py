"""Device classes: one TOML file each, read, listed, written and detected.

The bundled classes and fleets are package data (`budgetplan/profiles/*.toml`, `profiles/fleets/*.toml`; the
repository's top-level `profiles/` links there), found with importlib.resources so an installed wheel has them.
Your own classes live in directories named by `--devices-dir` or `BUDGETPLAN_DEVICES_DIR` (several joined with
os.pathsep); those are searched first, so a file of yours with a bundled class's name replaces it.

A device file states what one class of client can give a training round: memory available to training
(not total RAM), sustained training FLOP/s (not peak), uplink, the round's compute deadline and upload time
budget, and local samples per round. `sources` says where every number comes from, one "field: ..." entry
per field; numbers that are not measured or published say "assumption: ...".
"""

from __future__ import annotations

import datetime
import importlib.resources
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from budgetplan.errors import DeviceError
from budgetplan.files import read_toml, refuse_other_kind
from budgetplan.validate import NAME, magnitude_problem

# Package data: installed wheels unpack to the file system, so the resource is a plain directory.
BUNDLED_DIR = Path(str(importlib.resources.files("budgetplan") / "profiles"))
FLEETS_DIR = BUNDLED_DIR / "fleets"
DEVICES_DIR_ENV = "BUDGETPLAN_DEVICES_DIR"
NUMBER_FIELDS = ("memory_bytes", "total_memory_bytes", "flops_per_s", "uplink_bits_per_s", "round_deadline_s",
                 "upload_time_budget_s", "samples_per_round")


@dataclass(frozen=True)
class DeviceClass:
    name: str
    description: str
    memory_bytes: int  # available to training: total minus what the OS and the runtime keep
    total_memory_bytes: int
    flops_per_s: float  # sustained while training, not the datasheet peak
    uplink_bits_per_s: float
    round_deadline_s: float  # time the round allows for local training
    upload_time_budget_s: float  # time allowed for sending the update after training
    samples_per_round: int  # local training samples per round
    sources: tuple[str, ...]
    origin: str = "<memory>"  # the file it was read from

    def __post_init__(self):
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name) or ".." in self.name:
            raise DeviceError(f"{self.origin}: name = {self.name!r} must be a plain name (letters, digits and "
                              ". _ + -, starting with a letter or digit); fix it in the device file")
        if not isinstance(self.description, str) or not all(isinstance(s, str) for s in self.sources):
            raise DeviceError(f"{self.origin}: description and sources must be strings; fix them in the device file")
        for name in NUMBER_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise DeviceError(f"{self.origin}: {name} = {value!r} must be a number > 0; fix it in the device file")
            problem = magnitude_problem(name, value)
            if problem:
                raise DeviceError(f"{self.origin}: {problem}; fix it in the device file")
        for name in ("memory_bytes", "total_memory_bytes", "samples_per_round"):
            if not isinstance(getattr(self, name), int):
                raise DeviceError(f"{self.origin}: {name} = {getattr(self, name)!r} must be a whole number")
        if self.memory_bytes > self.total_memory_bytes:
            raise DeviceError(f"{self.origin}: memory_bytes ({self.memory_bytes}) exceeds total_memory_bytes "
                              f"({self.total_memory_bytes}); memory_bytes is the share left to training")
        missing = [n for n in NUMBER_FIELDS if not any(s.startswith(f"{n}:") for s in self.sources)]
        if missing:
            raise DeviceError(f"{self.origin}: no source for {', '.join(missing)}; add \"FIELD: where it comes from\" "
                              "(or \"FIELD: assumption: ...\") to sources")


def device_dirs(extra: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    """Where device classes are looked up, first match wins: `extra`, then $BUDGETPLAN_DEVICES_DIR, then bundled."""
    env = [p for p in os.environ.get(DEVICES_DIR_ENV, "").split(os.pathsep) if p]
    for where, paths in (("--devices-dir", extra), (DEVICES_DIR_ENV, env)):
        for path in paths:
            if not Path(path).is_dir():
                raise DeviceError(f"{where} {path} is not a directory; point it at a folder of device TOML files")
    return (*(Path(p) for p in extra), *(Path(p) for p in env), BUNDLED_DIR)


def device_from_dict(data: dict, origin: str) -> DeviceClass:
    refuse_other_kind(data, "device", origin, "a device file", "give a device file (see 'budgetplan devices show "
                      "jetson-nano')", DeviceError)
    known = {f.name for f in fields(DeviceClass)} - {"origin"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DeviceError(f"{origin}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
    missing = sorted(known - set(data))
    if missing:
        raise DeviceError(f"{origin}: missing field(s) {', '.join(missing)}; see 'budgetplan devices show jetson-nano'")
    if not isinstance(data["sources"], list) or not all(isinstance(s, str) for s in data["sources"]):
        raise DeviceError(f"{origin}: sources must be a list of strings \"FIELD: provenance\"")
    return DeviceClass(**{**data, "sources": tuple(data["sources"]), "origin": origin})


def read_device_file(path: str | Path) -> DeviceClass:
    fix = "copy one from 'budgetplan devices list' or run 'budgetplan devices detect --out PATH'"
    return device_from_dict(read_toml(path, "device file", fix, DeviceError, kind="device"), origin=str(path))


def list_devices(extra_dirs: Sequence[str | Path] = ()) -> tuple[DeviceClass, ...]:
    """Every device class on the search path (see device_dirs), by name; an earlier directory's class wins."""
    found: dict[str, DeviceClass] = {}
    for directory in device_dirs(extra_dirs):
        for path in sorted(directory.glob("*.toml")):
            device = read_device_file(path)
            found.setdefault(device.name, device)
    return tuple(found[name] for name in sorted(found))


def load_device(name: str, extra_dirs: Sequence[str | Path] = ()) -> DeviceClass:
    """A device class by name (or file stem) from the search path: `extra_dirs`, $BUDGETPLAN_DEVICES_DIR, bundled.
    A name is never a path: --device-file reads files."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise DeviceError(f"device {name!r} is not a device name (letters, digits and . _ + -); to read a file "
                          "pass --device-file PATH (in a fleet: device_file = PATH)")
    for directory in device_dirs(extra_dirs):
        path = directory / f"{name}.toml"
        if path.is_file():
            return read_device_file(path)
    for device in list_devices(extra_dirs):
        if device.name == name:
            return device
    known = ", ".join(d.name for d in list_devices(extra_dirs)) or "none"
    raise DeviceError(f"unknown device '{name}'; known devices: {known}; or pass --device-file PATH "
                      f"(or --devices-dir DIR / {DEVICES_DIR_ENV})")


def bundled_fleets() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in FLEETS_DIR.glob("*.toml")))


def fleet_file(spec: str | Path) -> Path:
    """A fleet TOML path; a bare name such as 'demo' or 'mixed-edge' means the bundled fleet of that name."""
    path = Path(spec)
    if not path.exists() and path.suffix == "" and len(path.parts) == 1 and (FLEETS_DIR / f"{spec}.toml").is_file():
        return FLEETS_DIR / f"{spec}.toml"
    return path


def _toml_value(value) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[\n" + "".join(f"  {_toml_value(v)},\n" for v in value) + "]"
    return repr(value)


def device_to_toml(device: DeviceClass) -> str:
    """The device as a TOML file that read_device_file reads back unchanged."""
    lines = [f"{f.name} = {_toml_value(getattr(device, f.name))}" for f in fields(DeviceClass) if f.name != "origin"]
    return "\n".join(lines) + "\n"


def write_device_file(device: DeviceClass, path: str | Path) -> None:
    Path(path).write_text(device_to_toml(device))


# detect: what a machine can give, measured where possible and labelled where not.
DETECT_TRAINING_SHARE = 0.8  # of the memory free now; the rest is left for the OS and the runtime's growth
DETECT_UPLINK_BITS_PER_S = 10e6
DETECT_DEADLINE_S, DETECT_UPLOAD_S, DETECT_SAMPLES = 300.0, 60.0, 256
# One BERT-MLP-sized matmul (tokens x hidden @ hidden x 4 hidden), as in small-Transformer training.
BENCH_TOKENS, BENCH_IN, BENCH_OUT = 512, 384, 1536


def _gpu_memory() -> tuple[int, int] | None:
    """(total, free) bytes of GPU 0 from NVML, or None: no NVML here, and Jetsons report no memory through it."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0))
            return int(info.total), int(info.free)
        finally:
            pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        return None


def free_memory(device: str = "cpu") -> tuple[int, str]:
    """(bytes free now, where the number comes from): NVML's free memory of GPU 0 for a CUDA device where NVML
    answers, else psutil's available memory (no driver, a Jetson's NVML, a CPU device)."""
    import psutil

    gpu = _gpu_memory() if device.startswith("cuda") else None
    if gpu is not None:
        return gpu[1], "measured: NVML free memory of GPU 0"
    return int(psutil.virtual_memory().available), "measured: psutil available memory"


def measure_flops_per_s(seconds: float = 1.0, device: str = "cpu") -> float:
    """Sustained FLOP/s of matmul forward + backward (input and weight gradients) in fp32 for `seconds`.

    FLOPs = 2 x MACs; one step is three matmuls of tokens x in x out: forward, grad input, grad weight.
    """
    import time

    import torch

    x = torch.randn(BENCH_TOKENS, BENCH_IN, device=device, requires_grad=True)
    w = torch.randn(BENCH_IN, BENCH_OUT, device=device, requires_grad=True)
    grad_out = torch.ones(BENCH_TOKENS, BENCH_OUT, device=device)
    step_flops = 3 * 2 * BENCH_TOKENS * BENCH_IN * BENCH_OUT

    def run(steps: int) -> None:
        for _ in range(steps):
            (x @ w).backward(grad_out)
        if device == "cuda":
            torch.cuda.synchronize()

    run(3)  # warm-up: allocator, thread pool, kernels
    steps, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        run(4)
        steps += 4
    return steps * step_flops / elapsed


def detect_device(name: str = "this-machine", seconds: float = 1.0) -> DeviceClass:
    """A device class for the machine this runs on; the uplink is an assumption the user must confirm."""
    import platform

    import psutil
    import torch

    date = datetime.date.today().isoformat()
    gpu = _gpu_memory() if torch.cuda.is_available() else None
    if gpu is not None:
        total, free, where, device = gpu[0], gpu[1], "NVML free memory of GPU 0", "cuda"
    else:
        memory = psutil.virtual_memory()
        total, free, where, device = memory.total, memory.available, "psutil.virtual_memory().available", "cpu"
    flops = measure_flops_per_s(seconds, device)
    bench = f"{BENCH_TOKENS}x{BENCH_IN} @ {BENCH_IN}x{BENCH_OUT} fp32 on {device}, torch {torch.__version__}"
    return DeviceClass(
        name=name,
        description=f"detected on {platform.node() or 'this machine'} ({platform.machine()}, {device}) on {date}",
        memory_bytes=int(free * DETECT_TRAINING_SHARE),
        total_memory_bytes=int(total),
        flops_per_s=float(round(flops, -6)),
        uplink_bits_per_s=DETECT_UPLINK_BITS_PER_S,
        round_deadline_s=DETECT_DEADLINE_S,
        upload_time_budget_s=DETECT_UPLOAD_S,
        samples_per_round=DETECT_SAMPLES,
        sources=(
            f"memory_bytes: measured: {where} = {free} bytes on {date}, times {DETECT_TRAINING_SHARE} "
            f"(assumption: the rest stays free for the OS and the runtime)",
            f"total_memory_bytes: measured: {'NVML' if gpu else 'psutil'} total on {date}",
            f"flops_per_s: measured: matmul + backward for {seconds:g} s ({bench}); FLOPs = 2 x MACs, "
            "matmuls only, so real training (norms, softmax, optimizer) runs slower",
            "uplink_bits_per_s: assumption: NOT MEASURED, a 10 Mbit/s placeholder; confirm with a speed test "
            "on the training network and edit this value",
            "round_deadline_s: assumption: budgetplan's default round of 300 s; set your federation's deadline",
            "upload_time_budget_s: assumption: budgetplan's default of 60 s for sending the update",
            "samples_per_round: assumption: budgetplan's default of 256 local samples per round",
        ),
        origin="budgetplan devices detect",
    )
