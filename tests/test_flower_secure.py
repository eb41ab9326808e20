"""Secure by default (issue 24 item 1), the parts that need no running federation: the CA and SuperLink
certificate (checked with Python's own TLS stack in a real handshake), SuperNode key pairs (read back by Flower's
own key loader), the node files as the registry of keys, the roster refusing a node whose key or claim does not
match, and the exported app's config and README for TLS (and, opt-in, --insecure)."""

import socket
import ssl
import stat
import threading
import tomllib

import pytest

pytest.importorskip("flwr")

from budgetplan.integrations.flower import registry as reg  # noqa: E402
from budgetplan.integrations.flower.deploy import certs  # noqa: E402


def _handshake(cert_file, key_file, ca_file, server_name):
    """A TLS handshake on 127.0.0.1 between a server holding cert/key and a client that trusts only ca_file."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    client_ctx = ssl.create_default_context(cafile=str(ca_file))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)

        def serve():
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw:
                with client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                    tls.sendall(b"x")
                    return tls.version()
        finally:
            thread.join(10)


def test_the_superlink_certificate_is_trusted_through_the_ca_for_its_hosts_only(tmp_path):
    made = certs.ensure_certificates(tmp_path, ("superlink.example",))
    for private in (made.ca_key, made.server_key):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert certs.cert_hosts(made.server_cert) == {"127.0.0.1", "localhost", "superlink.example"}
    for name in ("127.0.0.1", "localhost", "superlink.example"):
        assert _handshake(made.server_cert, made.server_key, made.ca_cert, name).startswith("TLSv1")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(made.server_cert, made.server_key, made.ca_cert, "other.example")
    other = certs.ensure_certificates(tmp_path / "other")  # another deployment's CA does not vouch for it
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(made.server_cert, made.server_key, other.ca_cert, "127.0.0.1")


def test_certificates_are_kept_on_restart_and_remade_for_a_new_host(tmp_path):
    first = certs.ensure_certificates(tmp_path)
    ca, cert = first.ca_cert.read_bytes(), first.server_cert.read_bytes()
    certs.ensure_certificates(tmp_path)
    assert (first.ca_cert.read_bytes(), first.server_cert.read_bytes()) == (ca, cert)
    certs.ensure_certificates(tmp_path, ("10.0.0.7",))
    assert first.ca_cert.read_bytes() == ca and first.server_cert.read_bytes() != cert
    assert "10.0.0.7" in certs.cert_hosts(first.server_cert)


def test_a_node_key_pair_is_what_flower_loads_and_registers(tmp_path):
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    from flwr.cli.supernode.register import try_load_public_key

    path = tmp_path / "keys" / "node-0"
    public = certs.make_node_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    private = load_ssh_private_key(path.read_bytes(), None)  # as flower-supernode reads it
    assert private.curve.name == "secp384r1"
    flower_pem = try_load_public_key(path.with_name("node-0.pub"))  # what flwr supernode register sends
    assert reg.pem_of(public) == flower_pem
    assert certs.make_node_key(path) == public  # kept


def _node_file(tmp_path, index, device_class, key=True):
    nodes = tmp_path / "nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    path = nodes / f"node-{index}.toml"
    path.write_text(f'partition-id = {index}\ndevice-class = "{device_class}"\n')
    public = certs.make_node_key(tmp_path / "keys" / f"node-{index}")
    if key:
        reg.set_public_key(path, public)
        reg.set_public_key(path, public)  # replaced, not added twice
    return reg.pem_of(public)


def test_node_files_are_the_registry_and_a_claim_must_match_its_key(tmp_path):
    weak, head = _node_file(tmp_path, 0, "weak"), _node_file(tmp_path, 1, "head")
    stranger = _node_file(tmp_path / "elsewhere", 0, "weak")
    data = tomllib.loads((tmp_path / "nodes" / "node-0.toml").read_text())
    assert data["partition-id"] == 0 and data["device-class"] == "weak" and data["public-key"].startswith("ecdsa-")
    registry = reg.read_registry(tmp_path / "nodes")
    assert set(registry) == {weak, head}
    assert reg.registration_problem(weak, 0, "weak", registry) is None
    assert reg.registration_problem(head, 1, "head", registry) is None
    assert "in no nodes/*.toml" in reg.registration_problem(stranger, 0, "weak", registry)
    assert "registered in node-0.toml for partition-id 0" in reg.registration_problem(weak, 1, "head", registry)
    assert "class 'weak'" in reg.registration_problem(weak, 0, "head", registry)
    assert reg.registration_problem(stranger, 5, "x", {}) is None  # no registry: the nodes' own word
    assert reg.registration_problem(b"\x01" * 32, 0, "weak", registry) is None  # a simulation's virtual node


def test_bad_node_files_are_one_line_naming_the_file(tmp_path):
    from budgetplan.errors import ConfigError

    _node_file(tmp_path, 0, "weak", key=False)
    assert reg.read_registry(tmp_path / "nodes") == {}  # no key anywhere: an --insecure app
    (tmp_path / "nodes" / "node-1.toml").write_text('partition-id = 1\ndevice-class = "weak"\npublic-key = "x"\n')
    with pytest.raises(ConfigError, match="node-1.toml: not a node file") as err:
        reg.read_registry(tmp_path / "nodes")
    assert "\n" not in str(err.value)
    key = _node_file(tmp_path / "two", 0, "weak")
    (tmp_path / "two" / "nodes" / "node-1.toml").write_text(
        (tmp_path / "two" / "nodes" / "node-0.toml").read_text().replace("partition-id = 0", "partition-id = 1"))
    with pytest.raises(ConfigError, match="the same public-key"):
        reg.read_registry(tmp_path / "two" / "nodes")
    assert key


def test_the_roster_refuses_an_unregistered_key_and_a_claim_its_key_does_not_hold(tmp_path):
    """identify.py asks the SuperLink (grid.get_nodes) for the key each node authenticated with."""
    from fl_helpers import flower_task_identity
    from test_flower_identity import SuperLinkGrid, _plan

    from budgetplan.integrations.flower.identify import NodeRoster, identify_nodes

    keys = [_node_file(tmp_path, i, c) for i, c in enumerate(("weak", "weak"))]
    stranger = _node_file(tmp_path / "elsewhere", 0, "weak")
    grid = SuperLinkGrid({1: ("weak", 0), 2: ("weak", 0), 3: ("weak", 2)})
    grid.keys = {1: keys[0], 2: keys[1], 3: stranger}  # 2 claims node 0's partition; 3 is nobody's
    with flower_task_identity():
        roster = NodeRoster.for_plan(_plan(), reg.read_registry(tmp_path / "nodes"))
        identify_nodes(roster, grid, expected=3, wait_s=0.0, timeout_s=1.0, first=True)
    assert set(roster.nodes) == {1}
    assert "registered in node-1.toml for partition-id 1" in roster.rejected[2]
    assert "in no nodes/*.toml" in roster.rejected[3]


def test_export_is_tls_with_node_authentication_unless_insecure_is_asked_for(tmp_path):
    from fl_helpers import class_plan, tiny_config, tiny_plan

    from budgetplan.integrations.flower import export

    plan, config = tiny_plan(class_plan("weak", 1.0, ("frozen",) * 3 + ("trained",))), tiny_config(clients=2)
    secure = export.export_flower_app(plan, config, tmp_path / "secure")
    entry = tomllib.loads((tmp_path / "secure" / ".flwr" / "config.toml").read_text())["superlink"][export.FEDERATION]
    assert "insecure" not in entry and entry["root-certificates"] == str((tmp_path / "secure").resolve()
                                                                         / export.CA_CERT)
    readme = (tmp_path / "secure" / "README.md").read_text()
    assert "--enable-supernode-auth" in readme and "flwr supernode register .flwr/keys/node-1.pub" in readme
    assert "--insecure" not in readme.split("## Local deployment")[1].split("## Resume")[0]
    assert not secure.insecure and not export.app_is_insecure(tmp_path / "secure")
    loose = export.export_flower_app(plan, config, tmp_path / "loose", insecure=True)
    entry = tomllib.loads((tmp_path / "loose" / ".flwr" / "config.toml").read_text())["superlink"][export.FEDERATION]
    assert entry["insecure"] is True and loose.insecure and export.app_is_insecure(tmp_path / "loose")
    assert "INSECURE" in (tmp_path / "loose" / "README.md").read_text()
