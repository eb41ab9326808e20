"""Which SuperNode key may speak for which client: the app's node files as a registry.

An exported app's `nodes/node-<i>.toml` is node i's node config (its `partition-id` and `device-class`). A node
file may also hold the node's authentication key, `public-key = "ecdsa-sha2-nistp384 AAAA..."` (OpenSSH
text, the `.pub` file `flwr supernode register` takes). When any node file holds one, the ServerApp accepts a
node only if the key the SuperLink authenticated it with (Flower's NodeInfo.public_key) is in a node file, and
the partition and class the node claims are that file's: a registered device cannot claim another device's
data or class. With no key in any file (an `--insecure` app) identities are the nodes' own word.

The node files travel to the server inside the app bundle (`flwr run` packs every *.toml), so the registry the
server reads is the one the operator wrote. Keys are compared as PEM SubjectPublicKeyInfo, Flower's own form.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from budgetplan.errors import ConfigError
from budgetplan.integrations.flower.export import toml_string

PUBLIC_KEY = "public-key"  # the node-config key that holds a node's OpenSSH public key
PARTITION_ID, DEVICE_CLASS = "partition-id", "device-class"


@dataclass(frozen=True)
class Registration:
    """What a registered key may claim: its node file's partition id and device class."""

    partition: int
    device_class: str
    source: str  # the node file, for messages


def pem_of(openssh: str) -> bytes:
    """An OpenSSH EC public key as PEM SubjectPublicKeyInfo (how the SuperLink stores a node's key)."""
    key = serialization.load_ssh_public_key(openssh.strip().encode("ascii"))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"a {type(key).__name__}, Flower's node authentication takes an EC (NIST P-384) key")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def is_key(public_key: bytes) -> bool:
    """Whether bytes are a PEM public key. A node on the network always has one (the SuperLink checks each request's
    signature with it); Flower's simulation gives its virtual nodes random bytes instead, and they hold no key."""
    try:
        serialization.load_pem_public_key(public_key)
    except (ValueError, TypeError):
        return False
    return True


def node_file_entry(path: Path) -> tuple[bytes, Registration] | None:
    """(PEM key, registration) of one node file, or None when it holds no key; ConfigError naming a bad file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        if PUBLIC_KEY not in data:
            return None
        return pem_of(str(data[PUBLIC_KEY])), Registration(int(data[PARTITION_ID]), str(data[DEVICE_CLASS]),
                                                           path.name)
    except (OSError, UnicodeError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a node file with partition-id, device-class and an OpenSSH EC public-key "
                          f"({type(exc).__name__}: {str(exc)[:120]}); write it again with budgetplan flower-local "
                          "or as docs/flower.md shows") from None


def read_registry(nodes_dir: str | Path | None) -> dict[bytes, Registration]:
    """Every key registered in nodes_dir/*.toml (empty: no file holds a key, or no directory)."""
    if nodes_dir is None or not Path(nodes_dir).is_dir():
        return {}
    registry: dict[bytes, Registration] = {}
    for path in sorted(Path(nodes_dir).glob("*.toml")):
        entry = node_file_entry(path)
        if entry is None:
            continue
        key, registration = entry
        if key in registry:
            raise ConfigError(f"{path} and {registry[key].source} hold the same public-key; give each node its "
                              "own key pair")
        registry[key] = registration
    return registry


def registration_problem(public_key: bytes | None, partition: int, device_class: str,
                         registry: Mapping[bytes, Registration]) -> str | None:
    """Why a node that claims (partition, device_class) may not, given the key it authenticated with; None if it may.
    An empty registry checks nothing (identities are self-reported); a node without a key is a simulation's."""
    if not registry or public_key is None or not is_key(public_key):
        return None
    registered = registry.get(public_key)
    if registered is None:
        return ("its public key is in no nodes/*.toml of the app; add the node's file with its public-key "
                "(docs/flower.md: adding a node) or revoke its key with flwr supernode unregister")
    if (registered.partition, registered.device_class) != (partition, device_class):
        return (f"claims partition-id {partition} and class {device_class!r}, but its key is registered in "
                f"{registered.source} for partition-id {registered.partition} and class "
                f"{registered.device_class!r}; start it with its own node file")
    return None


def set_public_key(node_file: Path, public_key: str) -> None:
    """Register a key in a node file: write (or replace) its `public-key` line, keeping the other lines."""
    pem_of(public_key)  # an OpenSSH EC key, or ValueError before anything is written
    lines = [line for line in node_file.read_text(encoding="utf-8").splitlines()
             if not line.startswith(f"{PUBLIC_KEY} =")]
    node_file.write_text("\n".join([*lines, f"{PUBLIC_KEY} = {toml_string(public_key)}"]) + "\n", encoding="utf-8")
