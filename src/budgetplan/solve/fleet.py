"""Fleet mode: one model for a whole fleet of device classes, each class with its own configuration.

A fleet file (TOML):

    name = "mixed-edge"
    # profile JSON paths, relative to the fleet file; "bundled:minilm" is the bundled MiniLM profile
    models = ["all-minilm-l6-v2.profile.json", "bundled:minilm"]

    [[classes]]
    device = "jetson-nano"          # a bundled device name (budgetplan devices list) ...
    share = 0.4                     # fraction of the fleet's clients in this class, > 0

    [[classes]]
    device_file = "my-phone.toml"   # ... or a device file, relative to the fleet file
    share = 0.6

Shares must sum to 1 (within 1e-6); they are not normalised silently.

Choice: every candidate model is solved for every class (solve/classes.py: one built model per profile,
answers reused only where provably identical, so each class gets exactly what solve_device gives it).
A model's score is sum(share x objective value) over the classes it fits (a class that fits nothing sits
out); a model that fits no class is not eligible; ties go to the lower share-weighted predicted peak, then
to the earlier model in the list.

Candidate models are independent, so with `processes` > 1 (opt-in) the largest is solved in this process and
the others in `processes` - 1 worker processes; a model's answers do not depend on where it was solved (each
has its own ProfileSolver either way), and a worker's model advances the progress all at once when it is done.
Workers start from a forkserver, so a script that opts in needs the `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from budgetplan.devices import DeviceClass, bundled_fleets, fleet_file, load_device, read_device_file
from budgetplan.errors import ConfigError, DeviceError, InfeasibleError
from budgetplan.files import read_toml
from budgetplan.profile.io import BUNDLED_PROFILE_NAME, profile_path
from budgetplan.profile.types import ModelProfile
from budgetplan.solve.budget import budget_of
from budgetplan.solve.classes import ProfileSolver
from budgetplan.solve.run import OPTIMAL, SolverParams
from budgetplan.solve.solution import DeviceSolution

SHARE_TOLERANCE = 1e-6
FEASIBLE = "FEASIBLE"


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


@dataclass(frozen=True)
class ModelChoice:
    profile: ModelProfile
    score: float  # sum(share x objective value) over the classes that fit
    solutions: tuple[DeviceSolution | None, ...]  # per fleet class; None = nothing fits, the class sits out
    reasons: tuple[str | None, ...]  # per fleet class, why nothing fits (the InfeasibleError message)


@dataclass(frozen=True)
class FleetSolution:
    fleet: Fleet
    chosen: ModelChoice
    candidates: tuple[ModelChoice, ...]
    status: str  # OPTIMAL when every class solve was proved, else FEASIBLE
    solve_s: float


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
    unknown = sorted(set(data) - {"name", "models", "classes"})
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) {', '.join(unknown)}; a fleet file has name, models and [[classes]]")
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
    return Fleet(name, classes, tuple(models), origin)


def read_fleet(path: str | Path, device_dirs=()) -> Fleet:
    """A fleet file (see the module docstring), or a bundled fleet's name ('demo', 'mixed-edge'); device names are
    looked up in `device_dirs`, $BUDGETPLAN_DEVICES_DIR, then the bundled classes. ConfigError / DeviceError with
    one line naming what is wrong."""
    path = fleet_file(path)
    fix = f"see 'budgetplan devices list' and the bundled fleets ({', '.join(bundled_fleets())}) for the format"
    data = read_toml(path, "fleet file", fix, ConfigError)
    return _fleet_from_dict(data, path, device_dirs)


def model_path(fleet: Fleet, entry: str) -> Path:
    """Where a `models` entry of the fleet file points: the bundled profile, or a path next to the fleet file."""
    path = profile_path(entry)
    return path if path.is_absolute() else Path(fleet.origin).parent / path


def read_fleet_profiles(fleet: Fleet) -> list[ModelProfile]:
    from budgetplan.profile.io import read_profile

    return [read_profile(model_path(fleet, entry)) for entry in fleet.model_paths]


def _solve_model(solver: ProfileSolver, fleet: Fleet, tick: Callable[[], None]):
    """Per class (solution, reason, proved); classes with identical integer budgets are solved once."""
    budgets = [budget_of(c.device) for c in fleet.classes]
    # Larger classes first: their proved answers are the ones smaller classes can reuse.
    order = sorted(range(len(budgets)), key=lambda i: tuple(-c for c in solver.caps(budgets[i])))
    done: dict = {}
    results: list = [None] * len(budgets)
    for i in order:
        device = fleet.classes[i].device
        if budgets[i] in done:
            solution, reason, proved, name = done[budgets[i]]
            solution = dataclasses.replace(solution, device=device, solve_s=0.0) if solution else None
            reason = device.name + reason[len(name):] if reason else None
            results[i] = (solution, reason, proved)
        else:
            results[i] = solver.solve_class(device)
            done[budgets[i]] = (*results[i], device.name)
        tick()
    return results


def _model_results(profile: ModelProfile, fleet: Fleet, objective: str, contiguous: bool, params: SolverParams,
                   importance: tuple[float, ...] | None, tick: Callable[[], None] = lambda: None) -> list:
    """Per class (solution, reason, proved) for one candidate model; a worker process runs this too."""
    solver = ProfileSolver(profile, objective, contiguous, params, importance, relax=True)
    return _solve_model(solver, fleet, tick)


def _all_results(profiles: list[ModelProfile], fleet: Fleet, job: tuple, processes: int,
                 tick: Callable[[int], None]) -> list[list]:
    """_model_results for every profile: the largest here, the others in `processes` - 1 worker processes.

    Workers come from a forkserver, not a fork: the caller may run threads (the CLI's progress bar), and a
    fork copies their locks. A worker's start (importing the solver) overlaps the largest model's solve."""
    if processes <= 1 or len(profiles) < 2:
        return [_model_results(p, fleet, *job, tick=lambda: tick(1)) for p in profiles]
    order = sorted(range(len(profiles)), key=lambda i: -profiles[i].num_blocks)  # the longest job first
    results: list = [None] * len(profiles)
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(min(processes - 1, len(profiles) - 1), mp_context=context) as pool:
        futures = {pool.submit(_model_results, profiles[i], fleet, *job): i for i in order[1:]}
        results[order[0]] = _model_results(profiles[order[0]], fleet, *job, tick=lambda: tick(1))
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            tick(len(fleet.classes))
    return results


def _choice(profile: ModelProfile, fleet: Fleet, results: list) -> ModelChoice:
    solutions = tuple(r[0] for r in results)
    score = sum(c.share * float(s.objective_value) for c, s in zip(fleet.classes, solutions) if s is not None)
    return ModelChoice(profile, score, solutions, tuple(r[1] for r in results))


def _weighted_peak(choice: ModelChoice, fleet: Fleet) -> float:
    return sum(c.share * s.peak_bytes for c, s in zip(fleet.classes, choice.solutions) if s is not None)


def solve_fleet(profiles: list[ModelProfile], fleet: Fleet, objective: str = "layers", contiguous: bool = False,
                time_limit_s: float = 10.0, seed: int = 0, workers: int = 1,
                importance: tuple[float, ...] | None = None,
                progress: Callable[[int, int], None] | None = None,
                processes: int = 1) -> FleetSolution:
    """The candidate model with the best share-weighted objective over the fleet, each class solved exactly.
    `processes`: processes solving the candidate models, this one included (see the module docstring)."""
    if not profiles:
        raise ConfigError(f"{fleet.origin}: no candidate model to solve for; list profile paths in models")
    start, total, count = time.perf_counter(), len(profiles) * len(fleet.classes), [0]

    def tick(done: int) -> None:
        count[0] += done
        if progress is not None:
            progress(count[0], total)

    job = (objective, contiguous, SolverParams(time_limit_s, seed, workers), importance)
    all_results = _all_results(profiles, fleet, job, processes, tick)
    proved = all(r[2] for results in all_results for r in results)
    candidates = [_choice(p, fleet, results) for p, results in zip(profiles, all_results)]
    eligible = [c for c in candidates if any(s is not None for s in c.solutions)]
    if not eligible:
        first = candidates[0]
        raise InfeasibleError(f"fleet {fleet.name}: no candidate model fits any class; for "
                              f"{first.profile.model.name}: " + "; ".join(first.reasons))
    chosen = max(eligible, key=lambda c: (c.score, -_weighted_peak(c, fleet), -candidates.index(c)))
    return FleetSolution(fleet, chosen, tuple(candidates), OPTIMAL if proved else FEASIBLE,
                         time.perf_counter() - start)
