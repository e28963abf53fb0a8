"""Host tier: the program's own remote commands, run over real SSH against namespaced test hosts.

Every case runs the `create`/`update`/`delete` strings of `Run.commands` (tests.support.program) as
built by the program, and asserts on the hosts' files, the running stand-in apiserver's flags and the
restart timeline, not only on exit codes.
"""

from __future__ import annotations

import difflib
import os
import re
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from components.apiserver import host_files_text
from lab import standin
from lab.hosts import SAMPLES, Host, tcp_open

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(240)]

CERT_FILES = {"aggregator-ca.pem": 0o644, "aggregator.pem": 0o644, "aggregator-key.pem": 0o600}


# ------------------------------------------------------------------------------------------ helpers
def assert_flags_once(host: Host, flags: dict[str, str]) -> None:
    args = host.config_args()
    for name, value in flags.items():
        hits = [a for a in args if a == name or a.startswith(name + "=")]
        assert hits == [f"{name}={value}"], f"{host.name}: {name} should be set exactly once to {value!r}, found {hits}"


def changed_lines(before: bytes, after: bytes) -> list[str]:
    diff = difflib.unified_diff(before.decode().splitlines(True), after.decode().splitlines(True), n=0)
    return [d for d in diff if d[:1] in "+-" and not d.startswith(("+++", "---"))]


def assert_only_flag_lines_changed(host: Host, before: bytes, flags: dict[str, str], extra: tuple[str, ...] = ()) -> None:
    """Every other line, comment and flag is byte-identical; the trailing newline is kept."""
    after = host.config_bytes()
    for line in changed_lines(before, after):
        assert any(f"{n}=" in line for n in flags) or any(x in line for x in extra), (
            f"{host.name}: a line the script should not have touched changed: {line!r}"
        )
    assert before.endswith(b"\n") == after.endswith(b"\n")


def assert_certs(host: Host, cert_dir: str, outputs: dict) -> None:
    for name, mode in CERT_FILES.items():
        st = os.stat(host.path(f"{cert_dir}/{name}"))
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (mode, 0, 0), f"{host.name}: {cert_dir}/{name}"
    assert host.path(f"{cert_dir}/aggregator-ca.pem").read_text() == outputs["aggregatorCaCertPem"]
    assert host.path(f"{cert_dir}/aggregator.pem").read_text() == outputs["proxyClientCertPem"]
    cert = x509.load_pem_x509_certificate(host.path(f"{cert_dir}/aggregator.pem").read_bytes())
    key = serialization.load_pem_private_key(host.path(f"{cert_dir}/aggregator-key.pem").read_bytes(), None)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.PEM, pub) == cert.public_key().public_bytes(
        serialization.Encoding.PEM, pub
    ), f"{host.name}: the key file does not belong to the proxy-client certificate"
    # never leave temp files with key material behind
    leftovers = [p.name for p in host.path(cert_dir).iterdir() if p.name not in CERT_FILES]
    assert leftovers == [], f"{host.name}: left in {cert_dir}: {leftovers}"


def key_lines(hosts: list[Host], cert_dir_of) -> list[str]:
    """The base64 lines of every host's proxy-client key (read before a destroy removes it)."""
    out: list[str] = []
    for h in hosts:
        key = h.path(f"{cert_dir_of(h)}/aggregator-key.pem")
        if key.exists():
            out += key.read_text().splitlines()[1:-1]
    return out


def assert_no_secret_in_output(outcome, hosts: list[Host], cert_dir_of, keys: list[str] | None = None) -> None:
    text = "".join(r.stdout + r.stderr for r in outcome.results.values())
    assert "PRIVATE KEY" not in text
    for line in key_lines(hosts, cert_dir_of) if keys is None else keys:
        assert line not in text, "key material in a command's output"


def assert_streamed_output_is_short(outcome) -> None:
    """What the program streams while a step runs (components/apiserver.py STEP_LOGGING: the flags steps'
    stdout) has short lines only: pulumi-command hangs on a streamed line over 64 KiB."""
    for r in outcome.results.values():
        if r.name.endswith("-flags"):
            assert max(map(len, r.stdout.splitlines()), default=0) < 1024, f"{r.name}: {r.stdout[:300]}"


def assert_never_two_down(hosts: list[Host]) -> None:
    spans = sorted((a, b, h.name) for h in hosts for a, b in h.down_intervals())
    for (a1, b1, n1), (a2, _b2, n2) in zip(spans, spans[1:], strict=False):
        assert a2 >= b1, f"{n1} was down {a1:.3f}..{b1:.3f} while {n2} went down at {a2:.3f}"


def state_files(host: Host) -> list[str]:
    """What the script keeps in its state dir (the program's installed copies of the script aside); a
    state dir that does not exist (never created, or removed by destroy) keeps nothing."""
    state = host.path("/var/lib/metrics-aggregation")
    return sorted(p.name for p in state.iterdir() if p.name != "scripts") if state.exists() else []


# ------------------------------------------------------------------------------------------- cases
def test_fresh_apply_each_layout(lab, make_stack):
    """env-file, systemd-unit (KTHW) and static-pod (kubeadm): flags once, other bytes kept, restarted."""
    hosts = [lab.add_host("m-env", "env-file"), lab.add_host("m-unit", "systemd-unit"), lab.add_host("m-pod", "static-pod")]
    before = {h.name: h.config_bytes() for h in hosts}
    st = make_stack(hosts)
    out = st.up()
    assert out.ok, out.explain()
    for h in hosts:
        flags = st.flags_for(h)
        assert_flags_once(h, flags)
        assert_only_flag_lines_changed(h, before[h.name], flags)
        assert_certs(h, st.cert_dir(h), st.last.outputs)
        # the running apiserver (restarted by the stack's restartCommand / the kubelet) uses them
        running = h.running_flags()
        assert {k: running.get(k) for k in flags} == flags, h.name
        assert h.restarts() == 1, h.name
        assert h.readyz() == 200
        # one backup, of the original, in the state dir (never next to a static-pod manifest)
        backups = [n for n in state_files(h) if n.endswith(".orig")]
        assert len(backups) == 1
        assert (h.path("/var/lib/metrics-aggregation") / backups[0]).read_bytes() == before[h.name]
        if h.layout == "static-pod":  # the kubelet would run any other manifest in that directory
            assert [p.name for p in h.path(h.config_path).parent.iterdir()] == ["kube-apiserver.yaml"]
    # systemd-unit: the unit was reloaded before the restart (the stand-in runs the reloaded unit)
    unit_events = [e["event"] for e in hosts[1].events()]
    assert unit_events.index("daemon-reload") < unit_events.index("stop")
    # static-pod with certDir /etc/kubernetes/pki: already mounted by kubeadm, so no volume added
    assert "aggregator-certs" not in hosts[2].config_bytes().decode()
    assert "kubeadm upgrade" in out["m-pod-flags"].stderr
    assert_no_secret_in_output(out, hosts, st.cert_dir)
    assert_streamed_output_is_short(out)


def test_static_pod_cert_dir_gets_mounted_and_unmounted(lab, make_stack):
    h = lab.add_host("m-pod", "static-pod")
    before = h.config_bytes()
    st = make_stack([h], apiserver={"readyTimeoutSeconds": 10, "certDir": "/etc/kubernetes/ssl"})
    cmds = st.commands()
    out = st.runner.up(cmds)
    assert out.ok, out.explain()
    flags = st.flags_for(h)
    assert_flags_once(h, flags)
    added = [line for line in changed_lines(before, h.config_bytes()) if "--" not in line]
    assert added == [
        "+    - mountPath: /etc/kubernetes/ssl\n", "+      name: aggregator-certs\n", "+      readOnly: true\n",
        "+  - hostPath:\n", "+      path: /etc/kubernetes/ssl\n", "+      type: DirectoryOrCreate\n",
        "+    name: aggregator-certs\n",
    ]
    _, mounts = standin.static_pod(h.config_bytes().decode())
    assert ("/etc/kubernetes/ssl", "/etc/kubernetes/ssl") in mounts
    assert {k: h.running_flags().get(k) for k in flags} == flags
    out = st.runner.destroy(cmds)
    assert out.ok, out.explain()
    assert h.config_bytes() == before
    assert h.restarts() == 2 and h.readyz() == 200


def test_second_apply_is_a_noop(lab, make_stack):
    h = lab.add_host("m1", "env-file")
    st = make_stack([h])
    cmds = st.commands()
    assert st.runner.up(cmds).ok
    cfg = h.path(h.config_path)
    stat1, bytes1, events1 = os.stat(cfg), cfg.read_bytes(), h.events()
    key_stat1 = os.stat(h.path("/etc/kubernetes/ssl/aggregator-key.pem"))
    out = st.runner.up(cmds, update=True)
    assert out.ok, out.explain()
    assert "unchanged: all 8 flags already set" in out["m1-flags"].stdout
    assert "no restart" in out["m1-flags"].stdout
    assert out["m1-certs"].stdout.count(" unchanged") == 3
    stat2 = os.stat(cfg)
    assert (stat2.st_ino, stat2.st_mtime_ns, cfg.read_bytes()) == (stat1.st_ino, stat1.st_mtime_ns, bytes1)
    assert os.stat(h.path("/etc/kubernetes/ssl/aggregator-key.pem")).st_ino == key_stat1.st_ino
    assert h.events() == events1, "the second apply restarted the apiserver"


def test_preexisting_values_replaced_then_restored(lab, make_stack):
    h = lab.add_host("m1", "env-file", sample="kube-apiserver-preexisting.conf")
    before = h.config_bytes()
    st = make_stack([h])
    cmds = st.commands()
    out = st.runner.up(cmds)
    assert out.ok, out.explain()
    flags = st.flags_for(h)
    assert_flags_once(h, flags)
    assert_only_flag_lines_changed(h, before, flags)
    text = h.config_bytes().decode()
    # replaced in place (same line), not appended a second time
    assert "  --enable-aggregator-routing=true \\\n  --etcd-servers=" in text
    assert "  --requestheader-allowed-names=aggregator \\\n  --secure-port=6443" in text
    assert "front-proxy-client" not in text and "routing=false" not in text
    stdout = out["m1-flags"].stdout
    assert "--requestheader-allowed-names=front-proxy-client -> --requestheader-allowed-names=aggregator" in stdout
    assert h.running_flags()["--enable-aggregator-routing"] == "true"
    out = st.runner.destroy(cmds)
    assert out.ok, out.explain()
    assert h.config_bytes() == before
    running = h.running_flags()
    assert running["--requestheader-allowed-names"] == "front-proxy-client"
    assert running["--enable-aggregator-routing"] == "false"
    assert "--proxy-client-cert-file" not in running
    assert not h.path("/etc/kubernetes/ssl/aggregator-key.pem").exists()
    assert state_files(h) == []


def test_rolling_three_hosts_never_two_down(lab, make_stack):
    hosts = [lab.add_host(f"m{i}", layout) for i, layout in enumerate(["env-file", "systemd-unit", "env-file"], 1)]
    st = make_stack(hosts)
    out = st.up()
    assert out.ok, out.explain()
    assert all(h.restarts() == 1 for h in hosts)
    assert_never_two_down(hosts)
    downs = [h.down_intervals()[0][0] for h in hosts]
    assert downs == sorted(downs), "hosts restarted out of the masters order"
    # certificates went out in parallel, before any restart
    certs_end = max(out[f"{h.name}-certs"].end for h in hosts)
    assert certs_end <= min(downs)


@pytest.mark.parametrize("layout", ["env-file", "static-pod"])
def test_refused_flag_rolls_back_and_names_the_host(lab, make_stack, layout):
    h1, h2 = lab.add_host("m1", layout), lab.add_host("m2", "env-file")
    before1, before2 = h1.config_bytes(), h2.config_bytes()
    running_before = h1.running_flags()
    h1.refuse("--enable-aggregator-routing")
    st = make_stack([h1, h2], apiserver={"readyTimeoutSeconds": 4})
    out = st.up()
    assert not out.ok
    r = out["m1-flags"]
    assert r.rc == 1
    assert "master m1" in r.stderr
    assert "+ --enable-aggregator-routing=true" in r.stderr  # the flag change
    assert "refused by the test" in r.stderr  # the apiserver's last log lines
    # from the journal (systemd) or from the container runtime (static pod: crictl logs)
    assert ("m1 kube-apiserver[journal]:" in r.stderr) == (layout != "static-pod")
    assert "the previous file is back and kube-apiserver is ready on it" in r.stderr
    assert out.skipped() == ["m2-flags"]
    # the failure's output (the apiserver's log included) carries no key; what is streamed is short
    assert_no_secret_in_output(out, [h1, h2], st.cert_dir)
    assert_streamed_output_is_short(out)
    # host 1: old file, old flags, ready; no record of a change that did not happen
    assert h1.config_bytes() == before1
    assert h1.readyz() == 200 and h1.running_flags() == running_before
    # only the installed certificates are recorded (their step succeeded: its owner and what the cert dir
    # held before, for remove-certs): no record of a flag change
    key = st.cert_dir(h1).strip("/").replace("/", "_")
    # (and the host lock: it goes with the last of those)
    assert state_files(h1) == [f"certs-{key}.kept", f"certs-{key}.owner", "host.lock"]
    # host 2: certs only, never restarted
    assert h2.config_bytes() == before2 and h2.restarts() == 0
    assert_never_two_down([h1, h2])


def test_ssh_cut_mid_rollout_then_rerun_converges(lab, make_stack):
    hosts = [lab.add_host(f"m{i}", "env-file") for i in (1, 2, 3)]
    before = {h.name: h.config_bytes() for h in hosts}
    h1, h2, h3 = hosts
    st = make_stack(hosts)
    cmds = st.commands()

    def cut_when_host2_restarts() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and h2.restarts() == 0:
            time.sleep(0.02)
        h2.kill_sshd()

    cutter = threading.Thread(target=cut_when_host2_restarts, daemon=True)
    cutter.start()
    out = st.runner.up(cmds)
    cutter.join(70)
    assert out["m1-flags"].rc == 0
    assert out["m2-flags"].rc == 255, out.explain()  # ssh: connection lost
    assert out.skipped() == ["m3-flags"]
    assert_flags_once(h1, st.flags_for(h1))
    assert h3.config_bytes() == before["m3"] and h3.restarts() == 0
    # the script on host 2 does not die with the connection: it finishes its restart and wait
    h2.wait_ready(20)
    h2.start_sshd()
    out = st.runner.up(cmds, update=True)
    assert out.ok, out.explain()
    for h in hosts:
        assert_flags_once(h, st.flags_for(h))
        assert h.readyz() == 200
    assert h1.restarts() == 1 and h3.restarts() == 1 and h2.restarts() in (1, 2)
    assert "no restart" in out["m1-flags"].stdout
    assert_never_two_down(hosts)


def test_non_root_user_with_sudo(lab, make_stack):
    user = lab.ensure_ops_user()
    h = lab.add_host("m1", "systemd-unit", sudo_user=user)
    before = h.config_bytes()
    st = make_stack([h], ssh={"user": user, "port": 22, "privateKey": lab.client_key.read_text(), "sudo": True})
    cmds = st.commands()
    assert all(c[k].startswith("sudo -n ") for c in cmds for k in ("create", "update", "delete"))
    assert all(c["connection"]["user"] == user for c in cmds)
    out = st.runner.up(cmds)
    assert out.ok, out.explain()
    assert_certs(h, "/etc/kubernetes/ssl", st.last.outputs)  # key file 0600 root:root
    cfg = os.stat(h.path(h.config_path))
    assert (cfg.st_uid, cfg.st_mode & 0o7777) == (0, 0o644)
    assert_flags_once(h, st.flags_for(h))
    out = st.runner.destroy(cmds)
    assert out.ok, out.explain()
    assert h.config_bytes() == before


def test_non_root_user_without_sudo_rights_fails_clearly(lab, make_stack):
    user = lab.ensure_ops_user()
    h = lab.add_host("m1", "env-file")  # no sudoers rule on this host
    before = h.config_bytes()
    st = make_stack([h], ssh={"user": user, "port": 22, "privateKey": lab.client_key.read_text(), "sudo": True})
    out = st.up()
    first = out["m1-certs"]  # the first step the program runs on a master
    assert first.rc != 0 and "password is required" in first.stderr
    assert sorted(out.skipped()) == ["m1-flags"]
    assert h.config_bytes() == before and h.restarts() == 0


def test_destroy_returns_every_host_to_original_bytes(lab, make_stack):
    hosts = [lab.add_host("m-env", "env-file"), lab.add_host("m-unit", "systemd-unit"), lab.add_host("m-pod", "static-pod")]
    before = {h.name: h.config_bytes() for h in hosts}
    running = {h.name: h.running_flags() for h in hosts}
    st = make_stack(hosts)
    cmds = st.commands()
    assert st.runner.up(cmds).ok
    keys = key_lines(hosts, st.cert_dir)
    out = st.runner.destroy(cmds)
    assert out.ok, out.explain()
    assert keys and (assert_no_secret_in_output(out, hosts, st.cert_dir, keys) is None)
    assert_streamed_output_is_short(out)
    for h in hosts:
        assert h.config_bytes() == before[h.name], h.name
        assert h.running_flags() == running[h.name], h.name
        assert state_files(h) == [], h.name
        assert not any(h.path(f"{st.cert_dir(h)}/{n}").exists() for n in CERT_FILES)
        assert h.restarts() == 2
    assert_never_two_down(hosts)
    # reverts run in reverse rollout order
    reverts = sorted(hosts, key=lambda h: h.down_intervals()[1][0])
    assert [h.name for h in reverts] == ["m-pod", "m-unit", "m-env"]
    # everything the program put on the hosts is gone, the installed script included
    assert all(not h.path("/var/lib/metrics-aggregation/scripts").exists() for h in hosts)
    # a revert that runs again (say, a retried destroy) finds nothing to do and restarts nothing
    by_name = {c["name"]: c for c in cmds}
    for h in hosts:
        certs = by_name[f"{h.name}-certs"]  # puts the script back (and the certificates)
        assert st.runner.run(certs["connection"], certs["create"], certs["stdin"]).rc == 0
        flags = by_name[f"{h.name}-flags"]
        r = st.runner.run(flags["connection"], flags["delete"])
        assert r.rc == 0 and "nothing to revert" in r.stdout, r.stderr
        assert h.restarts() == 2 and h.config_bytes() == before[h.name]


def test_bastion_only_path(lab, make_stack):
    jump = lab.add_host("jump", layout=None)
    h = lab.add_host("m1", "env-file", behind=jump)
    assert not tcp_open(h.address, 22), "the master must not be reachable without the jump host"
    st = make_stack([h], ssh={"user": "root", "port": 22, "privateKey": lab.client_key.read_text(),
                              "bastion": {"host": jump.address, "user": "root", "hostKey": jump.host_key_pub}})
    cmds = st.commands()
    assert all(c["connection"]["proxy"]["host"] == jump.address for c in cmds)
    out = st.runner.up(cmds)
    assert out.ok, out.explain()
    assert_flags_once(h, st.flags_for(h))
    assert h.restarts() == 1


def test_install_certs_refuses_anything_but_ca_cert_key(lab, make_stack):
    h = lab.add_host("m1", "env-file")
    st = make_stack([h])
    by_name = {c["name"]: c for c in st.commands()}
    certs = by_name["m1-certs"]
    script = host_files_text()
    pems = certs["stdin"][len(script):]  # stdin: the host script and its editor, then the PEMs
    assert certs["stdin"].startswith(script)
    blocks = re.findall(r"-----BEGIN [A-Z ]+-----\n.*?-----END [A-Z ]+-----\n", pems, re.S)
    assert len(blocks) == 3
    for bad in ("", blocks[0] + blocks[1], blocks[2] + blocks[0] + blocks[1], pems + blocks[0],
                pems.replace("-----END", "not base64!\n-----END", 1), "hello\n" + pems):
        r = st.runner.run(certs["connection"], certs["create"], script + bad)
        assert r.rc != 0 and "refusing to install certificates" in r.stderr and "nothing written" in r.stderr
        assert "PRIVATE KEY-----\n" not in r.stdout + r.stderr
        assert not h.path("/etc/kubernetes/ssl").exists() or list(h.path("/etc/kubernetes/ssl").iterdir()) == []
    r = st.runner.run(certs["connection"], certs["create"], certs["stdin"])
    assert r.rc == 0, r.stderr
    assert_certs(h, "/etc/kubernetes/ssl", st.last.outputs)


def test_samples_look_like_real_installs():
    """The sample files are what the cases edit: keep them realistic (and parseable by the stand-in)."""
    env = (SAMPLES / "kube-apiserver.conf").read_text()
    assert env.startswith("#") and 'KUBE_APISERVER_OPTS="--advertise-address=' in env and len(standin.env_file_args(env, "KUBE_APISERVER_OPTS")) > 20
    assert len(standin.unit_args((SAMPLES / "kube-apiserver.service").read_text())) > 20
    flags, mounts = standin.static_pod((SAMPLES / "kube-apiserver.yaml").read_text())
    assert len(flags) >= 20 and ("/etc/kubernetes/pki", "/etc/kubernetes/pki") in mounts


def test_kubeadm_upgrade_rewrites_manifest_then_reapply_and_revert(lab, make_stack):
    """`kubeadm upgrade` regenerates the manifest (our flags gone, a new image): a re-apply puts the flags
    back, and the revert returns the *upgraded* manifest, not the stale pre-upgrade backup."""
    h = lab.add_host("m-pod", "static-pod")
    original = h.config_bytes()
    st = make_stack([h], apiserver={"readyTimeoutSeconds": 10, "certDir": "/etc/kubernetes/ssl"})
    cmds = st.commands()
    assert st.runner.up(cmds).ok
    upgraded = original.replace(b"kube-apiserver:v1.34.1", b"kube-apiserver:v1.35.0")
    assert upgraded != original
    h.path(h.config_path).write_bytes(upgraded)  # what kubeadm upgrade leaves behind
    deadline = time.monotonic() + 15
    while h.restarts() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    h.wait_ready()
    assert "--proxy-client-cert-file" not in h.running_flags()
    out = st.runner.up(cmds, update=True)
    assert out.ok, out.explain()
    assert "changed since the last apply: refreshed the backup" in out["m-pod-flags"].stdout
    assert_flags_once(h, st.flags_for(h))
    assert b"kube-apiserver:v1.35.0" in h.config_bytes()
    assert {k: h.running_flags().get(k) for k in st.flags_for(h)} == st.flags_for(h)
    out = st.runner.destroy(cmds)
    assert out.ok, out.explain()
    assert h.config_bytes() == upgraded


def test_lab_without_privileges_fails_with_the_reason(tmp_path, monkeypatch):
    """No root / no namespaces: the tier fails (pytest.fail in the `lab` fixture) saying why, never skips."""
    from lab import hosts as lab_mod

    monkeypatch.setattr(lab_mod.os, "geteuid", lambda: 1000)
    with pytest.raises(lab_mod.LabError, match="needs root"):
        lab_mod.Lab.create(tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(lab_mod, "sh", lambda *a, **k: lab_mod.subprocess.CompletedProcess(a, 1, "", "Operation not permitted"))
    with pytest.raises(lab_mod.LabError, match="cannot create a network namespace.*Operation not permitted"):
        lab_mod.Lab.create(tmp_path)
