"""The fleet file: device classes with their shares, candidate models, and optional fleet-wide limits.

A fleet file (TOML):

    name = "mixed-edge"
    # profile JSON paths, relative to the fleet file; "bundled:minilm" is the bundled MiniLM profile
    models = ["all-minilm-l6-v2.profile.json", "bundled:minilm"]
    # optional fleet-wide limits (solve/coupling.py), before the first [[classes]]; the CLI's
    # --fleet-ingress, --clients-per-round and --min-coverage override them
    ingress_bytes_per_round = 20_000_000  # the server accepts at most this many upload bytes per round ...
    clients_per_round = 10                # ... from this many clients sampled per round (by share)
    min_coverage = 0.2                    # a block trained in a round is trained by >= this share of its clients

    [[classes]]
    device = "jetson-nano"          # a device name (budgetplan devices list; --devices-dir first) ...
    share = 0.4                     # fraction of the fleet's clients in this class, > 0

    [[classes]]
    device_file = "my-phone.toml"   # ... or a device file, relative to the fleet file
    share = 0.6

Shares must sum to 1 (within 1e-6); they are not normalised silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from budgetplan.devices import DeviceClass, bundled_fleets, fleet_file, load_device, read_device_file
from budgetplan.errors import ConfigError
from budgetplan.files import read_toml, refuse_other_kind
from budgetplan.profile.io import BUNDLED_PROFILE_NAME, profile_path, read_profile
from budgetplan.profile.types import ModelProfile
from budgetplan.solve.coupling import FleetLimits
from budgetplan.validate import SHARE_TOLERANCE, magnitude_problem

LIMIT_KEYS = ("ingress_bytes_per_round", "clients_per_round", "min_coverage")


@dataclass(frozen=True)
class FleetClass:
    device: DeviceClass
    share: float  # fraction of the fleet's clients, > 0; the shares of a fleet sum to 1


@dataclass(frozen=True)
class Fleet:
    name: str
    classes: tuple[FleetClass, ...]
    model_paths: tuple[str, ...]  # as written in the file (see model_path)
    origin: str  # the file it was read from
    limits: FleetLimits = field(default_factory=FleetLimits)


def _class(entry, index: int, base: Path, origin: str, device_dirs=()) -> FleetClass:
    if not isinstance(entry, dict):
        raise ConfigError(f"{origin}: classes[{index}] must be a table with device (or device_file) and share")
    unknown = sorted(set(entry) - {"device", "device_file", "share"})
    if unknown:
        raise ConfigError(f"{origin}: classes[{index}] has unknown key(s) {', '.join(unknown)}; "
                          "use device or device_file, and share")
    if ("device" in entry) == ("device_file" in entry):
        raise ConfigError(f"{origin}: classes[{index}] needs exactly one of device = NAME or device_file = PATH")
    share = entry.get("share")
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not share > 0:
        raise ConfigError(f"{origin}: classes[{index}] share = {share!r} must be a number > 0")
    if "device" in entry:
        device = load_device(str(entry["device"]), device_dirs)
    else:
        device = read_device_file(base / str(entry["device_file"]))
    return FleetClass(device, float(share))


def _fleet_from_dict(data: dict, path: Path, device_dirs=()) -> Fleet:
    origin = str(path)
    refuse_other_kind(data, "fleet", origin, "a fleet file",
                      f"give a fleet file (bundled: {', '.join(bundled_fleets())})", ConfigError)
    unknown = sorted(set(data) - {"name", "models", "classes", *LIMIT_KEYS})
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) {', '.join(unknown)}; a fleet file has name, models, "
                          f"[[classes]] and optionally {', '.join(LIMIT_KEYS)}")
    name, models, entries = data.get("name"), data.get("models"), data.get("classes")
    if not isinstance(name, str) or not name:
        raise ConfigError(f'{origin}: name must be a non-empty string, e.g. name = "mixed-edge"')
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ConfigError(f'{origin}: models must be a non-empty list of profile paths, e.g. models = ["{BUNDLED_PROFILE_NAME}"]')
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{origin}: the fleet has no [[classes]]; add one per device class with device and share")
    classes = tuple(_class(e, i, path.parent, origin, device_dirs) for i, e in enumerate(entries))
    names = [c.device.name for c in classes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{origin}: device class(es) {', '.join(twice)} listed twice; list each class once")
    total = sum(c.share for c in classes)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise ConfigError(f"{origin}: class shares sum to {total:.6g}, not 1; make the shares add up to 1")
    return Fleet(name, classes, tuple(models), origin, _limits(data, origin))


def _limits(data: dict, origin: str) -> FleetLimits:
    values = {key: data[key] for key in LIMIT_KEYS if key in data}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{origin}: {key} = {value!r} must be a number")
        problem = magnitude_problem(key, value)
        if problem:
            raise ConfigError(f"{origin}: {problem}; fix it in the fleet file")
    try:
        return FleetLimits(**values)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None


def read_fleet(path: str | Path, device_dirs=()) -> Fleet:
    """A fleet file (see the module docstring), or a bundled fleet's name ('demo', 'mixed-edge'); device names are
    looked up in `device_dirs`, $BUDGETPLAN_DEVICES_DIR, then the bundled classes. ConfigError / DeviceError with
    one line naming what is wrong."""
    path = fleet_file(path)
    fix = f"see 'budgetplan devices list' and the bundled fleets ({', '.join(bundled_fleets())}) for the format"
    data = read_toml(path, "fleet file", fix, ConfigError, kind="fleet")
    return _fleet_from_dict(data, path, device_dirs)


def model_path(fleet: Fleet, entry: str) -> Path:
    """Where a `models` entry of the fleet file points: the bundled profile, or a path next to the fleet file."""
    path = profile_path(entry)
    return path if path.is_absolute() else Path(fleet.origin).parent / path


def read_fleet_profiles(fleet: Fleet) -> list[ModelProfile]:
    return [read_profile(model_path(fleet, entry)) for entry in fleet.model_paths]
