"""A local Flower 1.42 federation for an exported app: one SuperLink and one SuperNode per node file, on
127.0.0.1, each in its own process group so stopping it also stops the flwr-clientapp it started.

Used by `budgetplan flower-local` (the app's start-local.sh) and by the deployment tests. Each process gets
the offline environment (no update check, no telemetry) and FLWR_HOME=APP/.flwr, whose config.toml names
the SuperLink for `flwr run APP budgetplan-local`. Logs and pids live in APP/.flwr/local/.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from budgetplan.errors import ConfigError
from budgetplan.integrations.flower.export import FEDERATION, OFFLINE_ENV, federation_text

HOST = "127.0.0.1"
STATE = ".flwr/local"


def first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:200]


def free_port() -> int:
    """A TCP port free on the loopback interface now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def flower_env(app: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every Flower process of this app: offline switches, FLWR_HOME=APP/.flwr, and this
    Python's bin directory first on PATH (the SuperLink and SuperNodes start flwr-serverapp/-clientapp)."""
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env["FLWR_HOME"] = str(app / ".flwr")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra or {})
    return env


def flower_bin(name: str) -> str:
    """A Flower executable next to this Python (a venv's bin) if there, else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def node_files(app: Path) -> list[Path]:
    files = sorted((app / "nodes").glob("node-*.toml"), key=lambda p: int(p.stem.split("-")[1]))
    if not files:
        raise ConfigError(f"{app} has no nodes/node-<i>.toml; export the app again with 'budgetplan export'")
    return files


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ConfigError(f"the Flower process on port {port} exited with status {process.returncode}; "
                              "see its log in .flwr/local/")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise ConfigError(f"nothing listened on {HOST}:{port} within {timeout_s:g} s; see the logs in .flwr/local/")


@dataclass
class LocalFederation:
    """The processes of a local federation; `stop` ends every one of them (also after a failure)."""

    app: Path
    port: int
    simulation: bool = False
    env: dict[str, str] = field(default_factory=dict)  # added to every process's environment
    superlink: subprocess.Popen | None = None
    nodes: dict[int, subprocess.Popen] = field(default_factory=dict)
    node_ports: dict[int, int] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.app / STATE

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / f"{name}.log", "ab")
        try:
            return subprocess.Popen(argv, cwd=self.app, env=flower_env(self.app, self.env), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()

    def start_superlink(self, timeout_s: float = 60.0) -> None:
        (self.app / ".flwr").mkdir(exist_ok=True)
        count = len(node_files(self.app)) if self.simulation else None
        (self.app / ".flwr" / "config.toml").write_text(federation_text(self.port, count))
        argv = [flower_bin("flower-superlink"), "--insecure", "--host", HOST, "--port", str(self.port),
                "--disable-runtime-dependency-installation", *(["--simulation"] if self.simulation else [])]
        self.superlink = self._spawn("superlink", argv)
        self._save()
        wait_for_port(self.port, timeout_s, self.superlink)

    def start_node(self, index: int, port: int | None = None) -> subprocess.Popen:
        """Start SuperNode `index` with nodes/node-<index>.toml (again, after a stop: same node config)."""
        config = self.app / "nodes" / f"node-{index}.toml"
        if not config.is_file():
            raise ConfigError(f"{config} does not exist; node indexes are 0..{len(node_files(self.app)) - 1}")
        self.node_ports[index] = port or self.node_ports.get(index) or free_port()
        argv = [flower_bin("flower-supernode"), "--insecure", "--superlink", f"{HOST}:{self.port}",
                "--host", HOST, "--port", str(self.node_ports[index]), "--node-config", str(config)]
        self.nodes[index] = self._spawn(f"node-{index}", argv)
        self._save()
        return self.nodes[index]

    def stop_node(self, index: int, sig: int = signal.SIGTERM, timeout_s: float = 8.0) -> None:
        process = self.nodes.pop(index, None)
        if process is not None:
            _stop(process, sig, timeout_s)
        self._save()

    def stop(self, timeout_s: float = 8.0) -> None:
        for index in list(self.nodes):
            self.stop_node(index, timeout_s=timeout_s)
        if self.superlink is not None:
            _stop(self.superlink, signal.SIGTERM, timeout_s)
            self.superlink = None
        (self.state_dir / "pids.json").unlink(missing_ok=True)

    def run_app(self, run_config: dict[str, object] | None = None,
                timeout_s: float = 600.0) -> subprocess.CompletedProcess:
        """`flwr run APP budgetplan-local --stream` against this federation; its output and exit status."""
        return subprocess.run(flwr_run_argv(self.app, run_config), cwd=self.app, env=flower_env(self.app, self.env),
                              capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)

    def run_status(self, output: str, timeout_s: float = 60.0) -> str:
        """The status `flwr ls` reports for the run whose start `output` (of run_app) announces, e.g.
        'finished:completed' or 'finished:failed' (`flwr run --stream` exits 0 either way)."""
        found = re.search(r"Successfully started run (\d+)", output)
        if found is None:
            return "not started"
        argv = [flower_bin("flwr"), "ls", FEDERATION, "--run-id", found.group(1), "--format", "json"]
        result = subprocess.run(argv, cwd=self.app, env=flower_env(self.app, self.env), capture_output=True,
                                text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        try:
            return str(json.loads(result.stdout)["runs"][0]["status"])
        except (ValueError, KeyError, IndexError):
            return f"unknown ({first_line(result.stdout + result.stderr)})"

    def log(self, name: str) -> str:
        path = self.state_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _save(self) -> None:
        pids = {"superlink": self.superlink.pid if self.superlink else None,
                "nodes": {str(i): p.pid for i, p in self.nodes.items()}}
        (self.state_dir / "pids.json").write_text(json.dumps(pids) + "\n")


def _stop(process: subprocess.Popen, sig: int, timeout_s: float) -> None:
    """Signal the process group (the Flower process and the apps it started); SIGKILL what outlives timeout_s."""
    for attempt in (sig, signal.SIGKILL):
        try:
            os.killpg(process.pid, attempt)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout_s)
            break
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(process.pid, signal.SIGKILL)  # children left in the group (a clientapp mid-training)
    except ProcessLookupError:
        pass


def start_local(app: str | Path, port: int | None = None, simulation: bool = False,
                timeout_s: float = 60.0, env: dict[str, str] | None = None) -> LocalFederation:
    """Start the SuperLink and (unless simulation) every SuperNode of an exported app; stops all on failure."""
    app = Path(app).resolve()
    if not (app / "pyproject.toml").is_file():
        raise ConfigError(f"{app} is not an exported app (no pyproject.toml); export one with 'budgetplan export'")
    federation = LocalFederation(app, port or free_port(), simulation, dict(env or {}))
    try:
        federation.start_superlink(timeout_s)
        if not simulation:
            for index, _ in enumerate(node_files(app)):
                federation.start_node(index)
    except BaseException:
        federation.stop()
        raise
    return federation


def stop_recorded(app: str | Path, timeout_s: float = 8.0) -> int:
    """Stop the processes a `flower-local` start recorded in APP/.flwr/local/pids.json; how many were signalled."""
    path = Path(app) / STATE / "pids.json"
    if not path.is_file():
        return 0
    pids = json.loads(path.read_text())
    count = 0
    for pid in [*pids.get("nodes", {}).values(), pids.get("superlink")]:
        if pid:
            try:
                os.killpg(int(pid), signal.SIGTERM)
                count += 1
            except ProcessLookupError:
                pass
    path.unlink()
    return count


def flwr_run_argv(app: Path, run_config: dict[str, object] | None = None) -> list[str]:
    """`flwr run APP budgetplan-local --stream [--run-config ...]`."""
    argv = [flower_bin("flwr"), "run", str(app), FEDERATION, "--stream"]
    if run_config:
        from budgetplan.integrations.flower.export import toml_value

        argv += ["--run-config", " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())]
    return argv


def read_node_config(path: Path) -> dict:
    return tomllib.loads(path.read_text())
