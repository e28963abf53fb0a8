"""Host tier: taking over a master that is not blank (issue 10, "nothing of the user's is lost").

The classic manual guide leaves every master with a cfssl-made aggregator CA and proxy cert as
`/etc/kubernetes/ssl/aggregator-ca.pem`, `aggregator.pem`, `aggregator-key.pem` (the very names the program
writes) and the 8 aggregation flags added by hand to KUBE_APISERVER_OPTS. `up` then `destroy` (also after a
failed first apply, and for a renamed master) must leave the config file and those three files byte for
byte as they were, with their modes and owners, and the apiserver must restart and be ready on them.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.hosts import Host, wait_for
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
    assert not h.path("/var/lib/metrics-aggregation").exists(), f"{h.name}: the (empty) state dir is left"
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


def test_cert_dir_created_by_us_is_removed_only_when_empty(lab, make_stack):
    h = lab.add_host("m1", "env-file")
    assert not h.path(SSL).exists()
    st = make_stack([h])
    commands = st.commands()
    out = st.runner.up(commands)
    assert out.ok, out.explain()
    assert "created /etc/kubernetes/ssl" in out["m1-certs"].stdout
    out = st.runner.destroy(commands)
    assert out.ok, out.explain()
    assert not h.path(SSL).exists(), "the cert dir the program created is still there"
    assert_nothing_of_ours_left(h)

    # the operator drops a file of their own into the directory the program created: it stays, and so does
    # the directory
    out = st.runner.up(commands)
    assert out.ok, out.explain()
    h.put_file(f"{SSL}/etcd.pem", b"operator's file\n", 0o600)
    out = st.runner.destroy(commands)
    assert out.ok, out.explain()
    assert sorted(p.name for p in h.path(SSL).iterdir()) == ["etcd.pem"]
    assert h.path(f"{SSL}/etcd.pem").read_bytes() == b"operator's file\n"
    assert "holds other files now" in out["m1-certs"].stdout
    assert state_files(h) == []


def test_failed_install_certs_puts_back_what_it_replaced(lab, make_stack):
    """The key file is a mount point (EBUSY on rename): install-certs fails after writing the CA and the
    cert. A failed create leaves no resource, so no remove-certs would run: the script itself must put the
    originals back. The same for an update that fails: the previous certificates come back, and the
    originals kept for destroy are not touched."""
    h = handmade_host(lab)
    before = snapshot(h)
    key = f"{SSL}/aggregator-key.pem"
    st = make_stack([h])
    commands = st.commands()
    nsenter_mount(h, "mount", "--bind", key, key)
    try:
        out = st.runner.up(commands)
    finally:
        nsenter_mount(h, "umount", key)
    r = out["k8s-master1-certs"]
    assert r.rc == 1, out.explain()
    assert "master k8s-master1: error: cannot rename into /etc/kubernetes/ssl/aggregator-key.pem" in r.stderr
    assert "install-certs failed: put back the 2 file(s) it had replaced" in r.stderr
    assert "aggregator-ca.pem written" in r.stdout and "aggregator.pem written" in r.stdout
    assert out.skipped() == ["k8s-master1-flags"]
    assert_same(h, before, snapshot(h))
    assert state_files(h) == [], state_files(h)  # no record of a run that did not happen
    assert [p.name for p in h.path(SSL).iterdir() if p.name.startswith(".")] == []
    assert h.restarts() == 0

    # a later up succeeds; an update to a new CA that fails half-way (the CA written, the proxy cert
    # refused) puts our previous files back
    out = st.runner.up(commands)
    assert out.ok, out.explain()
    ours = snapshot(h)
    renewed = make_stack([h], pki={"hosts": ["127.0.0.1", "kubernetes", "kubernetes.default"],
                                   "caCommonName": "metrics-aggregation-ca-2"})
    new_commands = renewed.commands()
    cert = f"{SSL}/aggregator.pem"
    nsenter_mount(h, "mount", "--bind", cert, cert)
    try:
        out = renewed.runner.up(new_commands, update=True)
    finally:
        nsenter_mount(h, "umount", cert)
    r = out["k8s-master1-certs"]
    assert r.rc == 1 and "aggregator-ca.pem written" in r.stdout, out.explain()
    assert "put back the 1 file(s) it had replaced" in r.stderr
    assert_same(h, ours, snapshot(h))
    assert h.restarts() == 0

    out = st.runner.destroy(commands)
    assert out.ok, out.explain()
    assert_same(h, before, snapshot(h))
    assert_nothing_of_ours_left(h)


def test_failed_first_flags_apply_then_destroy(lab, make_stack):
    """The certs step took over the hand-made files, then the flags step failed and rolled back. Pulumi
    recorded only the certs step, so destroy runs only remove-certs: everything is back, byte for byte."""
    h = handmade_host(lab)
    before = snapshot(h)
    h.refuse("--audit-log-maxage=7")
    st = make_stack([h], apiserver={"readyTimeoutSeconds": 4, "extraFlags": {"--audit-log-maxage": 7}})
    commands = st.commands()
    out = st.runner.up(commands)
    assert out["k8s-master1-certs"].rc == 0 and out["k8s-master1-flags"].rc == 1, out.explain()
    assert "the previous file is back and kube-apiserver is ready on it" in out["k8s-master1-flags"].stderr
    out = st.runner.destroy(recorded(commands, out))
    assert list(out.results) == ["k8s-master1-certs"] and out.ok, out.explain()
    assert_same(h, before, snapshot(h))
    assert_nothing_of_ours_left(h)
    (h.dir / "refuse").unlink()
    running = restart_and_assert_ready(st, h)
    assert {k: running.get(k) for k in HANDMADE_FLAGS} == HANDMADE_FLAGS


def test_renamed_master_restores_the_handmade_files(lab, rename_master):
    """The new name's creates run first (its install-certs must not keep our files as originals), the old
    name's deletes last (a no-op: no longer the owner); the final destroy gives back the user's files."""
    h = handmade_host(lab)
    before = snapshot(h)
    _, renamed, new_commands, _, out = rename_master(h)
    assert "manages them now" in out["k8s-master1-certs"].stdout
    assert_certs(h, SSL, renamed.last.outputs)  # still ours: the new name manages them
    out = renamed.runner.destroy(new_commands)
    assert out.ok, out.explain()
    assert_same(h, before, snapshot(h))
    assert_nothing_of_ours_left(h)
    running = restart_and_assert_ready(renamed, h)
    assert {k: running.get(k) for k in HANDMADE_FLAGS} == HANDMADE_FLAGS


def test_a_retried_remove_certs_leaves_the_restored_files_alone(lab, make_stack):
    """A delete that ran on the host but whose result was lost is retried by Pulumi: the second
    remove-certs must not take the user's restored files for ours."""
    h = handmade_host(lab)
    before = snapshot(h)
    st = make_stack([h])
    commands = st.commands()
    assert st.runner.up(commands).ok
    assert st.runner.destroy(commands).ok
    certs = next(c for c in commands if c["name"] == "k8s-master1-certs")
    r = st.runner.run(certs["connection"], certs["delete"])
    assert r.rc == 0, r.stderr
    assert_same(h, before, snapshot(h))


def test_symlinked_cert_file_is_refused_before_anything_is_written(lab, make_stack):
    h = handmade_host(lab)
    h.path(f"{SSL}/aggregator.pem").rename(h.path(f"{SSL}/proxy-client.pem"))
    h.path(f"{SSL}/aggregator.pem").symlink_to("proxy-client.pem")
    before = snapshot(h)
    st = make_stack([h])
    out = st.runner.up(st.commands())
    r = out["k8s-master1-certs"]
    assert r.rc == 1 and "/etc/kubernetes/ssl/aggregator.pem is a symbolic link" in r.stderr, out.explain()
    assert "apiserver.certDir" in r.stderr and "nothing written" in r.stderr
    assert_same(h, before, snapshot(h))
    assert h.path(f"{SSL}/aggregator.pem").is_symlink()


def test_a_crash_between_two_writes_leaves_a_way_back(lab, make_stack):
    """install-certs killed outright (SIGKILL: power loss, the OOM killer) after replacing the CA file and
    before the cert file: no rollback runs and Pulumi records nothing. The originals were kept durably
    before each write, so the next up does not take the program's CA file for an original, and destroy
    gives back every user file; the temp dir the killed run left (key material) is gone."""
    if not shutil.which("strace"):  # the crash is placed with strace's fault injection; never skipped
        pytest.fail("strace is missing: apt-get install -y strace", pytrace=False)
    h = handmade_host(lab)
    before = snapshot(h)
    st = make_stack([h])
    commands = st.commands()
    certs = next(c for c in commands if c["name"] == "k8s-master1-certs")
    kept = h.path("/var/lib/metrics-aggregation/certs-etc_kubernetes_ssl.kept")
    ours_ca = st.last.outputs["aggregatorCaCertPem"].encode()
    # strace holds the rename onto aggregator.pem (the second write) for 60 s: the crash happens there
    hold = f"{SSL}/aggregator.pem"
    argv = ["nsenter", "-t", str(h.supervisor.pid), "-m", "-n", "--",
            "strace", "-f", "-qq", "-o", "/dev/null", "-P", hold, "-e", "trace=rename,renameat,renameat2",
            "-e", "inject=rename,renameat,renameat2:delay_enter=60000000", "sh", "-c", certs["create"]]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        p.stdin.write(certs["stdin"].encode())
        p.stdin.close()
        wait_for(lambda: (kept / "aggregator.pem.meta").exists()
                 and h.path(f"{SSL}/aggregator-ca.pem").read_bytes() == ours_ca, "the first write", 30)
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)
    crashed = snapshot(h)
    assert crashed[f"{SSL}/aggregator-ca.pem"][0] == ours_ca
    assert crashed[f"{SSL}/aggregator.pem"] == before[f"{SSL}/aggregator.pem"]
    assert crashed[f"{SSL}/aggregator-key.pem"] == before[f"{SSL}/aggregator-key.pem"]
    assert [p.name for p in h.path(SSL).iterdir() if p.name.startswith(".aggregation.")], "expected the killed run's temp dir"

    out = st.runner.up(commands)
    assert out.ok, out.explain()
    stdout = out["k8s-master1-certs"].stdout
    assert "kept the original /etc/kubernetes/ssl/aggregator-ca.pem" not in stdout, "took the program's file for an original"
    assert "kept the original /etc/kubernetes/ssl/aggregator-key.pem" in stdout
    out = st.runner.destroy(commands)
    assert out.ok, out.explain()
    assert_same(h, before, snapshot(h))
    assert_nothing_of_ours_left(h)


def replaced_files(h: Host) -> dict[str, tuple[bytes, int, str]]:
    """STATE/replaced/<cert dir key>/: NAME.<UTC time> -> (bytes, mode, its .meta)."""
    d = h.path("/var/lib/metrics-aggregation/replaced/etc_kubernetes_ssl")
    if not d.exists():
        return {}
    return {p.name: (p.read_bytes(), p.stat().st_mode & 0o7777, (d / f"{p.name}.meta").read_text())
            for p in d.iterdir() if not p.name.endswith(".meta")}


def test_a_cert_file_the_user_changed_after_up_is_set_aside_not_lost(lab, make_stack):
    """Review finding: remove-certs put the kept original back over (or deleted) a cert file the user had
    written after `up`, so the user's bytes were lost. install-certs now records the sha256 of what it wrote;
    remove-certs keeps a changed file in STATE/replaced/ (0600, mode/owner in .meta) and says where, then
    restores or deletes as before. A cert dir installed by an earlier version (no checksums) keeps the old
    behaviour."""
    hand = handmade_host(lab)
    before = snapshot(hand)
    fresh, legacy = lab.add_host("m-fresh", "env-file"), lab.add_host("m-legacy", "env-file")
    st = make_stack([hand, fresh, legacy])
    commands = st.commands()
    out = st.runner.up(commands)
    assert out.ok, out.explain()
    out = st.runner.up(commands, update=True)  # a re-install keeps the checksums of its own files
    assert out.ok and not any("changed since install-certs" in r.stderr for r in out.results.values()), out.explain()
    assert all(replaced_files(h) == {} for h in (hand, fresh, legacy))
    # after up, the users write their own files: a CA on the hand-made master (the original is kept), a key
    # on the fresh one (recorded absent), a CA on a master whose state has no checksums (an earlier version)
    users_ca = cfssl_like_pems()["aggregator-ca.pem"]
    users_key = cfssl_like_pems()["aggregator-key.pem"]
    hand.put_file(f"{SSL}/aggregator-ca.pem", users_ca, 0o644, 0, OPS_GID)
    fresh.put_file(f"{SSL}/aggregator-key.pem", users_key, 0o640, 0, OPS_GID)
    kept = "/var/lib/metrics-aggregation/certs-etc_kubernetes_ssl.kept"
    for sums in legacy.path(kept).glob("*.sha256"):
        sums.unlink()
    legacy.put_file(f"{SSL}/aggregator-ca.pem", users_ca, 0o644)

    out = st.runner.destroy(commands)
    assert out.ok, out.explain()
    assert_same(hand, before, snapshot(hand))  # the original is back ...
    (name, (data, mode, meta)), = replaced_files(hand).items()  # ... and the user's file is kept
    assert re.fullmatch(r"aggregator-ca\.pem\.\d{8}T\d{6}Z", name), name
    assert (data, mode, meta) == (users_ca, 0o600, f"644 0 {OPS_GID}\n")
    path = f"/var/lib/metrics-aggregation/replaced/etc_kubernetes_ssl/{name}"
    assert f"{SSL}/aggregator-ca.pem changed since install-certs wrote it: kept your file as {path}" in out[f"{hand.name}-certs"].stderr
    assert "aggregator.pem changed" not in out[f"{hand.name}-certs"].stderr

    assert not fresh.path(SSL).exists()  # the program created it
    (name, (data, mode, meta)), = replaced_files(fresh).items()
    assert name.startswith("aggregator-key.pem.") and (data, mode, meta) == (users_key, 0o600, f"640 0 {OPS_GID}\n")
    text = "".join(r.stdout + r.stderr for r in out.results.values())
    for line in users_key.decode().splitlines()[1:-1]:
        assert line not in text, "key material in a command's output"

    assert replaced_files(legacy) == {} and not legacy.path(f"{SSL}/aggregator-ca.pem").exists()
    # the user's files are all that is left in the state dir (no lock, no record)
    assert (state_files(hand), state_files(fresh), state_files(legacy)) == (["replaced"], ["replaced"], [])
