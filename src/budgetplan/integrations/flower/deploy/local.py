"""A local Flower 1.42 federation for an exported app: one SuperLink and one SuperNode per node file, on
127.0.0.1, each in its own process group so stopping it also stops the flwr-clientapp it started.

Used by `budgetplan flower-local` (the app's start-local.sh) and by the deployment tests. Each process gets
the offline environment (no update check, no telemetry) and FLWR_HOME=APP/.flwr, whose config.toml names
the SuperLink for `flwr run APP budgetplan-local`. Logs and pids live in APP/.flwr/local/.

warm (the default): the SuperLink and each SuperNode run with `--isolation process`, each served by a warm
SuperExec (deploy/warm.py) that forks every ServerApp/ClientApp process from an interpreter that has imported torch
and budgetplan and prepared the app's model and data already, instead of Flower's SuperExec starting (and
importing) a fresh Python per message. The SuperExecs are forked on request from one such interpreter, the
zygote (`warm --serve APP/.flwr/local/superexec APP`): one import for the whole federation, and a restarted
SuperNode's SuperExec costs a fork. Each SuperExec runs in its own session, so stopping a SuperNode also
stops its SuperExec and the ClientApp it runs. warm=False is Flower's stock process model.

Secure by default: unless the app was exported with --insecure (or insecure=True is asked for), the federation
runs with TLS and SuperNode authentication. The app's CA, the SuperLink's certificate (SAN 127.0.0.1, localhost
and `hosts`) and one key pair per node are made under APP/.flwr/ (deploy/certs.py); each node's public key is
written into its nodes/node-<i>.toml (the registry the ServerApp checks) and registered at the SuperLink with
`flwr supernode register` before the node starts. Each SuperNode's own Runtime API (to its SuperExec) stays on
127.0.0.1 without TLS: it never leaves the device.
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
from dataclasses import dataclass, field
from pathlib import Path

from budgetplan.errors import ConfigError, first_line
from budgetplan.integrations.flower.deploy import certs as secrets
from budgetplan.integrations.flower.export import (
    FEDERATION, OFFLINE_ENV, PACKAGE, PLAN_NAME, app_is_insecure, federation_text, toml_value,
)
from budgetplan.integrations.flower.registry import set_public_key
from budgetplan.plan import read_plan

HOST = "127.0.0.1"
STATE = ".flwr/local"


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
    warm: bool = True
    superlink: subprocess.Popen | None = None
    nodes: dict[int, subprocess.Popen] = field(default_factory=dict)
    node_ports: dict[int, int] = field(default_factory=dict)
    zygote: subprocess.Popen | None = None  # the warm interpreter the SuperExecs are forked from (warm.serve)
    superexecs: set[str] = field(default_factory=set)  # "superlink", "node-<i>": those requested from the zygote
    insecure: bool = False  # no TLS, no node authentication (an --insecure app): loopback experiments only
    hosts: tuple[str, ...] = ()  # further names of this host the SuperLink's certificate holds
    certificates: secrets.Certificates | None = None  # set by start_superlink unless insecure
    registered: set[int] = field(default_factory=set)  # nodes whose key this SuperLink has registered

    @property
    def state_dir(self) -> Path:
        return self.app / STATE

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / f"{name}.log", "ab")
        try:
            return subprocess.Popen(argv, cwd=self.app, env=flower_env(self.app, {**self.env, **(env or {})}),
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        finally:
            log.close()

    def start_superlink(self, timeout_s: float = 60.0) -> None:
        (self.app / ".flwr").mkdir(exist_ok=True)
        count = len(node_files(self.app)) if self.simulation else None
        security = ["--insecure"]
        if not self.insecure:
            self.certificates = c = secrets.ensure_certificates(self.app, self.hosts)
            security = ["--ssl-ca-certfile", str(c.ca_cert), "--ssl-certfile", str(c.server_cert),
                        "--ssl-keyfile", str(c.server_key), *([] if self.simulation else ["--enable-supernode-auth"])]
        ca = None if self.certificates is None else self.certificates.ca_cert
        (self.app / ".flwr" / "config.toml").write_text(federation_text(self.port, count, root_certificates=ca))
        argv = [flower_bin("flower-superlink"), *security, "--host", HOST, "--port", str(self.port),
                "--disable-runtime-dependency-installation", *(["--simulation"] if self.simulation else []),
                *self._isolation()]
        self.superlink = self._spawn("superlink", argv)
        self._start_superexec("superlink", self.port, self.superlink, ca)
        wait_for_port(self.port, timeout_s, self.superlink)

    def register_node(self, index: int, timeout_s: float = 120.0) -> None:
        """Make node `index`'s key pair (kept if there), write its public key into its node file and register it
        at the SuperLink (`flwr supernode register`); once per SuperLink start."""
        if self.insecure or index in self.registered:
            return
        config = self.app / "nodes" / f"node-{index}.toml"
        public = secrets.make_node_key(secrets.node_key_path(self.app, index))
        set_public_key(config, public)
        argv = [flower_bin("flwr"), "supernode", "register", str(secrets.node_key_path(self.app, index)) + ".pub",
                FEDERATION, "--name", f"node-{index}"]
        result = subprocess.run(argv, cwd=self.app, env=flower_env(self.app, self.env), capture_output=True,
                                text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise ConfigError(f"flwr supernode register of node {index} failed: "
                              f"{first_line(result.stdout + result.stderr, 300)}")
        self.registered.add(index)

    def start_node(self, index: int, port: int | None = None) -> subprocess.Popen:
        """Start SuperNode `index` with nodes/node-<index>.toml (again, after a stop: same node config)."""
        config = self.app / "nodes" / f"node-{index}.toml"
        if not config.is_file():
            raise ConfigError(f"{config} does not exist; node indexes are 0..{len(node_files(self.app)) - 1}")
        self.node_ports[index] = port or self.node_ports.get(index) or free_port()
        self.register_node(index)
        argv = [flower_bin("flower-supernode"), *self.node_security(index), "--superlink", f"{HOST}:{self.port}",
                "--host", HOST, "--port", str(self.node_ports[index]), "--node-config", str(config),
                *self._isolation()]
        self.nodes[index] = self._spawn(f"node-{index}", argv)
        self._start_superexec(f"node-{index}", self.node_ports[index], self.nodes[index])
        return self.nodes[index]

    def node_security(self, index: int, key: Path | None = None) -> list[str]:
        """flower-supernode's TLS and authentication options for node `index` (key: another private key)."""
        if self.insecure:
            return ["--insecure"]
        key = key or secrets.node_key_path(self.app, index)
        return ["--root-certificates", str(self.certificates.ca_cert), "--auth-supernode-private-key", str(key)]

    @property
    def forks(self) -> bool:
        """Whether app processes come from warm SuperExecs (a simulation runs its apps inside Flower's own)."""
        return self.warm and not self.simulation

    def _isolation(self) -> list[str]:
        return ["--isolation", "process"] if self.forks else []

    @property
    def control_dir(self) -> Path:
        return self.state_dir / "superexec"

    def _start_superexec(self, name: str, port: int, parent: subprocess.Popen, ca: Path | None = None) -> None:
        """Ask the zygote (started on first use) for a warm SuperExec serving `name`'s Runtime API on port."""
        if self.forks:
            # lazy: warm imports flwr at once, and only a warm start needs it (--stop, --no-warm do not)
            from budgetplan.integrations.flower.deploy import warm

            if self.zygote is None:
                self.control_dir.mkdir(parents=True, exist_ok=True)
                for stale in self.control_dir.iterdir():  # requests and pids of an earlier start
                    stale.unlink()
                preload = {warm.PRELOAD_ENV: "peft"} if _uses_lora(self.app) else {}
                self.zygote = self._spawn("superexec", [sys.executable, "-m", warm.__name__, "--serve",
                                                        str(self.control_dir), str(self.app)], preload)
            (self.control_dir / f"{name}.pid").unlink(missing_ok=True)
            security = ["--insecure"] if ca is None else ["--root-certificates", str(ca)]  # a node's: loopback
            request = {"argv": [*security, "--runtime-api-address", f"{HOST}:{port}", "--parent-pid",
                                str(parent.pid)], "log": str(self.state_dir / f"{name}-superexec.log")}
            tmp = self.control_dir / f"{name}.json.tmp"
            tmp.write_text(json.dumps(request))
            tmp.replace(self.control_dir / f"{name}.json")  # the zygote reads only whole requests
            self.superexecs.add(name)
        self._save()

    def _superexec_pids(self, names) -> list[int]:
        """The pids of the named SuperExecs the zygote has started; a request it has not taken yet is withdrawn
        (a SuperExec also ends by itself when its SuperNode or SuperLink is gone: --parent-pid)."""
        for name in names:
            (self.control_dir / f"{name}.json").unlink(missing_ok=True)
        return [pid for name in names if (pid := _read_pid(self.control_dir, name))]

    def stop_node(self, index: int, sig: int = signal.SIGTERM, timeout_s: float = 8.0) -> None:
        """Signal SuperNode `index` and its SuperExec (with the ClientApp it runs), as a device that goes off."""
        name = f"node-{index}"
        pids = self._superexec_pids([name] if name in self.superexecs else [])
        self.superexecs.discard(name)
        _stop_all([self.nodes.pop(index, None), *pids], sig, timeout_s)
        self._save()

    def stop(self, timeout_s: float = 8.0) -> None:
        """Stop every process at once: SIGTERM to each process group, SIGKILL to what outlives timeout_s; the
        zygote last (it reaps the SuperExecs it forked)."""
        try:
            pids = self._superexec_pids(sorted(self.superexecs))
            _stop_all([*self.nodes.values(), self.superlink, *pids], signal.SIGTERM, timeout_s)
        finally:
            _stop_all([self.zygote], signal.SIGTERM, timeout_s)
            self.nodes.clear()
            self.superexecs.clear()
            self.superlink, self.zygote = None, None
            self.registered.clear()
            (self.state_dir / "pids.json").unlink(missing_ok=True)

    def run_app(self, run_config: dict[str, object] | None = None,
                timeout_s: float = 600.0) -> subprocess.CompletedProcess:
        """`flwr run APP budgetplan-local --stream` against this federation; its output and exit status."""
        return subprocess.run(flwr_run_argv(self.app, run_config), cwd=self.app, env=flower_env(self.app, self.env),
                              capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)

    def run_status(self, output: str, timeout_s: float = 60.0) -> str:
        """The status `flwr ls` reports for the run whose start `output` (of run_app) announces, e.g.
        'finished:completed' or 'finished:failed' (`flwr run --stream` exits 0 either way)."""
        return self.run_statuses([output], timeout_s)[0]

    def run_statuses(self, outputs: list[str], timeout_s: float = 60.0) -> list[str]:
        """run_status of each output, from one `flwr ls` of every run ('not started' when none was)."""
        ids = [found.group(1) if (found := re.search(r"Successfully started run (\d+)", o)) else None
               for o in outputs]
        argv = [flower_bin("flwr"), "ls", FEDERATION, "--format", "json"]
        result = subprocess.run(argv, cwd=self.app, env=flower_env(self.app, self.env), capture_output=True,
                                text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
        try:
            runs = {str(run["run-id"]): str(run["status"]) for run in json.loads(result.stdout)["runs"]}
        except (ValueError, KeyError, TypeError):
            runs = {}
        unknown = f"unknown ({first_line(result.stdout + result.stderr, 200)})"
        return [runs.get(i, unknown) if i else "not started" for i in ids]

    def log(self, name: str) -> str:
        path = self.state_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _save(self) -> None:
        pids = {"superlink": self.superlink.pid if self.superlink else None,
                "nodes": {str(i): p.pid for i, p in self.nodes.items()},
                "zygote": self.zygote.pid if self.zygote else None,
                "superexecs": {n: pid for n in sorted(self.superexecs) if (pid := _read_pid(self.control_dir, n))}}
        (self.state_dir / "pids.json").write_text(json.dumps(pids) + "\n")


def _read_pid(control: Path, name: str) -> int | None:
    """The pid of SuperExec `name` as the zygote recorded it, or None (not started yet)."""
    try:
        return int((control / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def _uses_lora(app: Path) -> bool:
    """Whether the app's plan has a LoRA block (its ClientApps then import peft)."""
    plan = read_plan(app / PACKAGE / PLAN_NAME)
    return any(state.startswith("lora") for c in plan.classes for state in c.block_states)


def _stop_all(processes: list[subprocess.Popen | int | None], sig: int, timeout_s: float) -> None:
    """Signal each process group (a Flower process and the apps it started; a pid: a process we did not start
    ourselves, e.g. a zygote's SuperExec); SIGKILL the groups of those that outlive timeout_s (one deadline
    for all), then what is left in every group (a clientapp mid-training)."""
    processes = [p for p in processes if p is not None]
    for process in processes:
        _killpg(process, sig)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        if not _wait(process, deadline):
            _killpg(process, signal.SIGKILL)
            _wait(process, time.monotonic() + timeout_s)
    for process in processes:
        _killpg(process, signal.SIGKILL)


def _wait(process: subprocess.Popen | int, deadline: float) -> bool:
    if isinstance(process, subprocess.Popen):
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
            return True
        except subprocess.TimeoutExpired:
            return False
    while alive(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def alive(pid: int) -> bool:
    """Whether process pid runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (ProcessLookupError, PermissionError):
        return False
    except OSError:  # no /proc: the signal got through, so it exists
        return True


def _killpg(process: subprocess.Popen | int, sig: int) -> None:
    try:
        os.killpg(process if isinstance(process, int) else process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_local(app: str | Path, port: int | None = None, simulation: bool = False,
                timeout_s: float = 60.0, env: dict[str, str] | None = None, warm: bool = True,
                insecure: bool | None = None, hosts: tuple[str, ...] = ()) -> LocalFederation:
    """Start the SuperLink and (unless simulation) every SuperNode of an exported app; stops all on failure.
    warm: app processes forked from a warm SuperExec (see the module's doc), else Flower's stock ones.
    insecure: no TLS and no node authentication (None: as the app was exported); hosts: further names the
    SuperLink's certificate holds (for SuperNodes on other hosts)."""
    app = Path(app).resolve()
    if not (app / "pyproject.toml").is_file():
        raise ConfigError(f"{app} is not an exported app (no pyproject.toml); export one with 'budgetplan export'")
    insecure = app_is_insecure(app) if insecure is None else insecure
    federation = LocalFederation(app, port or free_port(), simulation, dict(env or {}), warm, insecure=insecure,
                                 hosts=tuple(hosts))
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
    control = Path(app) / STATE / "superexec"
    forked = [_read_pid(control, f.stem) for f in control.glob("*.pid")] if control.is_dir() else []
    count = 0
    for pid in [*pids.get("nodes", {}).values(), pids.get("superlink"), *forked, pids.get("zygote")]:
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
        argv += ["--run-config", " ".join(f"{k}={toml_value(v)}" for k, v in run_config.items())]
    return argv
