"""Host tier: taking over a master that is not blank (issue 10, "nothing of the user's is lost").

The classic manual guide leaves every master with a cfssl-made aggregator CA and proxy cert as
`/etc/kubernetes/ssl/aggregator-ca.pem`, `aggregator.pem`, `aggregator-key.pem` (the very names the program
writes) and the 8 aggregation flags added by hand to KUBE_APISERVER_OPTS. `up` then `destroy` (also after a
failed first apply, and for a renamed master) must leave the config file and those three files byte for
byte as they were, with their modes and owners, and the apiserver must restart and be ready on them.
"""

from __future__ import annotations

import datetime
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.hosts.lab import Host
from tests.hosts.test_rollout import CERT_FILES, assert_certs, assert_flags_once, state_files

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(240)]

SSL = "/etc/kubernetes/ssl"
OPS_GID = 4711  # a non-root group that may read the hand-made key (0640), as some setups do
HANDMADE_FLAGS = {
    "--requestheader-client-ca-file": f"{SSL}/aggregator-ca.pem",
    "--requestheader-allowed-names": "aggregator",
    "--requestheader-extra-headers-prefix": "X-Remote-Extra-",
    "--requestheader-group-headers": "X-Remote-Group",
    "--requestheader-username-headers": "X-Remote-User",
    "--proxy-client-cert-file": f"{SSL}/aggregator.pem",
    "--proxy-client-key-file": f"{SSL}/aggregator-key.pem",
    "--enable-aggregator-routing": "true",
}


def cfssl_like_pems() -> dict[str, bytes]:
    """What the guide's cfssl run produces: a CA and a client+server cert with the same DN (CN=aggregator)."""
    now = datetime.datetime.now(datetime.UTC)
    dn = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "k8s"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "aggregator")])
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (x509.CertificateBuilder().subject_name(dn).issuer_name(dn).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = (x509.CertificateBuilder().subject_name(dn).issuer_name(dn).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return {
        "aggregator-ca.pem": ca.public_bytes(serialization.Encoding.PEM),
        "aggregator.pem": leaf.public_bytes(serialization.Encoding.PEM),
        # cfssl writes PKCS#1 ("RSA PRIVATE KEY")
        "aggregator-key.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                                serialization.NoEncryption()),
    }


def handmade_files() -> dict[str, tuple[bytes, int, int, int]]:
    pems = cfssl_like_pems()
    return {
        f"{SSL}/aggregator-ca.pem": (pems["aggregator-ca.pem"], 0o444, 0, 0),
        f"{SSL}/aggregator.pem": (pems["aggregator.pem"], 0o644, 0, OPS_GID),
        f"{SSL}/aggregator-key.pem": (pems["aggregator-key.pem"], 0o640, 0, OPS_GID),
    }


def handmade_host(lab, name: str = "k8s-master1") -> Host:
    """A master in the state the guide leaves: flags in KUBE_APISERVER_OPTS, the cfssl files, running."""
    h = lab.add_host(name, "env-file", sample="kube-apiserver-handmade.conf", files=handmade_files())
    assert {k: h.running_flags().get(k) for k in HANDMADE_FLAGS} == HANDMADE_FLAGS
    return h


def snapshot(h: Host) -> dict[str, tuple[bytes, int, int, int] | None]:
    """The config file and the three cert files: bytes, mode, uid, gid (None: absent)."""
    return {p: h.file_state(p) for p in [h.config_path] + [f"{SSL}/{n}" for n in CERT_FILES]}


def assert_same(h: Host, before: dict, after: dict) -> None:
    for path, was in before.items():
        now = after[path]
        if was is None or now is None:
            assert was == now, f"{h.name}: {path}: {'gone' if now is None else 'appeared'}"
            continue
        assert now[0] == was[0], f"{h.name}: {path}: other bytes than before"
        assert now[1:] == was[1:], f"{h.name}: {path}: mode/uid/gid {oct(now[1])} {now[2:]} != {oct(was[1])} {was[2:]}"


def restart_and_assert_ready(st, h: Host) -> dict[str, str]:
    """The apiserver restarts on the files as they are now and becomes ready (it exits on a missing one)."""
    conn = next(c for c in st.commands() if c["connection"]["host"] == h.address)["connection"]
    restarts = h.restarts()
    r = st.runner.run(conn, "systemctl restart kube-apiserver")
    assert r.rc == 0, r.stderr
    h.wait_ready(15)
    assert h.restarts() == restarts + 1
    return h.running_flags()


def recorded(commands: list[dict], out) -> list[dict]:
    """The commands Pulumi would have in its state after `up`: a failed create records nothing."""
    return [c for c in commands if c["name"] in out.results and out[c["name"]].rc == 0]


def assert_nothing_of_ours_left(h: Host) -> None:
    assert state_files(h) == [], f"{h.name}: left in the state dir: {state_files(h)}"
    assert not h.path("/var/lib/metrics-aggregation/scripts").exists()
    leftovers = [p.name for p in h.path(SSL).iterdir() if p.name.startswith(".")] if h.path(SSL).exists() else []
    assert leftovers == [], f"{h.name}: temp files left in {SSL}: {leftovers}"


def nsenter_mount(h: Host, *args: str) -> None:
    """Run mount/umount inside the host's mount namespace (the one its sshd serves)."""
    subprocess.run(["nsenter", "-t", str(h.supervisor.pid), "-m", "--", *args], check=True, capture_output=True, timeout=10)


# ------------------------------------------------------------------------------------------- cases
def test_handmade_state_round_trip(lab, make_stack):
    """Issue 10: the certs step overwrote the guide's PEMs and destroy deleted them, leaving a config that
    names missing files. Now: up takes over, destroy gives back every byte, mode and owner."""
    h = handmade_host(lab)
    before = snapshot(h)
    st = make_stack([h])
    commands = st.commands()
    out = st.runner.up(commands)
    assert out.ok, out.explain()
    assert "unchanged: all 8 flags already set" in out[f"{h.name}-flags"].stdout
    assert_certs(h, SSL, st.last.outputs)  # ours now: 0644/0644/0600 root:root, our CA and proxy cert
    assert_flags_once(h, st.flags_for(h))
    # the originals are kept in the state dir, never next to the files, never in any output
    text = "".join(r.stdout + r.stderr for r in out.results.values())
    assert "PRIVATE KEY" not in text
    again = st.runner.up(commands, update=True)  # a second install must not take our files for originals
    assert again.ok, again.explain()

    out = st.runner.destroy(commands)
    assert out.ok, out.explain()
    assert_same(h, before, snapshot(h))
    text = "".join(r.stdout + r.stderr for r in out.results.values())
    assert "PRIVATE KEY" not in text
    for line in before[f"{SSL}/aggregator-key.pem"][0].decode().splitlines()[1:-1]:
        assert line not in text, "key material in a command's output"
    assert_nothing_of_ours_left(h)
    running = restart_and_assert_ready(st, h)
    assert {k: running.get(k) for k in HANDMADE_FLAGS} == HANDMADE_FLAGS
