"""Host tier: `verify`, the read-only check of `apiserver.manage: false` (issue 10, deliverable 3).

The step's commands come from components.apiserver (`verify_step_commands(verify_options(settings, master))`,
the settings of the stack config under test), run over real SSH with the script on stdin, as the program's
verify step runs them. Each case checks the exit status and the one line per problem, and that verify
changed nothing: the config file (bytes, inode, mtime), the state dir (no record, no lock) and the apiserver
(no restart).
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.apiserver import host_files_text, verify_options, verify_step_commands
from lab import standin
from lab.hosts import Host
from tests.hosts.test_local_script import EDITOR, SCRIPT
from tests.hosts.test_rollout import state_files
from tests.hosts.test_takeover import cfssl_like_pems, handmade_host
from tests.unit.test_editor import config_file, manifest, words

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(240)]

PKI = "/etc/kubernetes/pki"
KUBEADM = {"pki": {"hosts": ["127.0.0.1"], "proxyClientCommonName": "front-proxy-client"},
           "apiserver": {"readyTimeoutSeconds": 10, "enableAggregatorRouting": False}}


def kubeadm_host(lab, name: str = "k8s-master2", **kw) -> Host:
    """A kubeadm control plane: aggregation with the front-proxy files, no --enable-aggregator-routing."""
    pems = cfssl_like_pems()
    files = {
        f"{PKI}/front-proxy-ca.crt": (pems["aggregator-ca.pem"], 0o644, 0, 0),
        f"{PKI}/front-proxy-client.crt": (pems["aggregator.pem"], 0o644, 0, 0),
        f"{PKI}/front-proxy-client.key": (pems["aggregator-key.pem"], 0o600, 0, 0),
    }
    return lab.add_host(name, "static-pod", sample="kube-apiserver-kubeadm.yaml", files=files, **kw)


class Verify:
    """The verify step of one master, as the program builds it for a stack config."""

    def __init__(self, st, host: Host):
        st.commands()
        s = st.last.settings
        master = next(m for m in s.masters if m.name == host.name)
        self.st, self.host = st, host
        self.options = verify_options(s, master)
        self.create, self.delete = verify_step_commands(self.options, sudo=s.ssh.sudo)
        self.conn = next(c for c in st.last.commands if c["connection"]["host"] == host.address)["connection"]

    def run(self):
        """create (install the script from stdin, then verify), asserting that nothing else changed."""
        h = self.host
        cfg = h.path(h.config_path)
        st1, bytes1, restarts = os.stat(cfg), cfg.read_bytes(), h.restarts()
        state1 = state_files(h)
        r = self.st.runner.run(self.conn, self.create, host_files_text())
        st2 = os.stat(cfg)
        assert (cfg.read_bytes(), st2.st_ino, st2.st_mtime_ns) == (bytes1, st1.st_ino, st1.st_mtime_ns)
        assert state_files(h) == state1, "verify wrote into the state dir"
        assert h.restarts() == restarts
        return r

    def problems(self, r) -> list[str]:
        return r.stderr.splitlines()


def edit(h: Host, old: str, new: str) -> None:
    cfg = h.path(h.config_path)
    text = cfg.read_text()
    assert old in text, old
    cfg.write_text(text.replace(old, new))


# ------------------------------------------------------------------------------------------- cases
def test_kubeadm_front_proxy_manifest_passes_and_changes_nothing(lab, make_stack):
    h = kubeadm_host(lab)
    st = make_stack([h], **KUBEADM)
    v = Verify(st, h)
    r = v.run()
    assert r.rc == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines() == [
        "apiserver-aggregation: k8s-master2: verify: /etc/kubernetes/manifests/kube-apiserver.yaml (static-pod) "
        "meets all 7 requirements: aggregation is configured"
    ]
    assert state_files(h) == [], "verify left a record or a lock"
    assert [p.name for p in h.path(h.config_path).parent.iterdir()] == ["kube-apiserver.yaml"]
    # delete: the installed script goes too, and the state dir the create made for it (the master had
    # none): nothing of the program is left on the master
    r = st.runner.run(v.conn, v.delete)
    assert r.rc == 0, r.stderr
    assert not h.path("/var/lib/metrics-aggregation").exists()


def test_kubeadm_as_a_sudo_user(lab, make_stack):
    """A non-root SSH user with sudo: the manifest and the key (root, 0600) are read as root."""
    user = lab.ensure_ops_user()
    h = kubeadm_host(lab, sudo_user=user)
    st = make_stack([h], ssh={"user": user, "port": 22, "privateKey": lab.client_key.read_text(), "sudo": True},
                    **KUBEADM)
    v = Verify(st, h)
    assert v.create.startswith("sudo -n ") and v.delete.startswith("sudo -n ")
    os.chmod(h.path(h.config_path), 0o600)
    r = v.run()
    assert r.rc == 0 and "meets all 7 requirements" in r.stdout, r.stderr
    r = st.runner.run(v.conn, v.delete)
    assert r.rc == 0 and not h.path("/var/lib/metrics-aggregation/scripts").exists(), r.stderr


def test_kubeadm_manifest_with_the_default_settings_names_each_problem(lab, make_stack):
    """Default settings (CN aggregator, enableAggregatorRouting true) on kubeadm's front-proxy setup."""
    h = kubeadm_host(lab)
    st = make_stack([h], pki={"hosts": ["127.0.0.1"]})
    r = Verify(st, h).run()
    assert r.rc == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        "apiserver-aggregation: master k8s-master2: error: --requestheader-allowed-names=front-proxy-client does not "
        "list 'aggregator' (pki.proxyClientCommonName)",
        "apiserver-aggregation: master k8s-master2: error: --enable-aggregator-routing is not set "
        "(apiserver.enableAggregatorRouting: true wants =true)",
    ]


def test_kubeadm_missing_front_proxy_file_is_named(lab, make_stack):
    h = kubeadm_host(lab)
    h.path(f"{PKI}/front-proxy-client.crt").unlink()
    st = make_stack([h], **KUBEADM)
    r = Verify(st, h).run()
    assert r.rc == 1
    assert r.stderr.splitlines() == [
        "apiserver-aggregation: master k8s-master2: error: --proxy-client-cert-file="
        "/etc/kubernetes/pki/front-proxy-client.crt: no such file"
    ]


SSL = "/etc/kubernetes/ssl"
E = "apiserver-aggregation: master k8s-master1: error: "
STD = "(the standard value, as kubeadm and this program set it)"
# (what is changed in the hand-made env file, the problem lines verify must print: [] = passes)
ENV_CASES = [
    ("  --enable-aggregator-routing=true \\\n", "",
     [E + "--enable-aggregator-routing is not set (apiserver.enableAggregatorRouting: true wants =true)"]),
    ("--enable-aggregator-routing=true", "--enable-aggregator-routing=false",
     [E + "--enable-aggregator-routing=false, expected --enable-aggregator-routing=true "
          "(apiserver.enableAggregatorRouting: true wants =true)"]),
    ("--enable-aggregator-routing=true", "--enable-aggregator-routing", []),  # a bare boolean flag is true
    ("--requestheader-allowed-names=aggregator", "--requestheader-allowed-names=front-proxy-client",
     [E + "--requestheader-allowed-names=front-proxy-client does not list 'aggregator' (pki.proxyClientCommonName)"]),
    ("--requestheader-allowed-names=aggregator", "--requestheader-allowed-names=front-proxy-client,aggregator", []),
    ("--requestheader-allowed-names=aggregator", "--requestheader-allowed-names=", []),  # empty: any CN
    ("  --requestheader-allowed-names=aggregator \\\n", "", []),  # unset: any CN
    ("--requestheader-group-headers=X-Remote-Group", "--requestheader-group-headers=X-Group",
     [E + f"--requestheader-group-headers=X-Group, expected --requestheader-group-headers=X-Remote-Group {STD}"]),
    ("  --requestheader-username-headers=X-Remote-User \\\n", "",
     [E + f"--requestheader-username-headers is not set {STD}"]),
    ("--requestheader-extra-headers-prefix=X-Remote-Extra-", "--requestheader-extra-headers-prefix=X-Extra-",
     [E + "--requestheader-extra-headers-prefix=X-Extra-, expected "
          f"--requestheader-extra-headers-prefix=X-Remote-Extra- {STD}"]),
    ("  --requestheader-client-ca-file=/etc/kubernetes/ssl/aggregator-ca.pem \\\n", "",
     [E + "--requestheader-client-ca-file is not set"]),
    ("--proxy-client-cert-file=/etc/kubernetes/ssl/aggregator.pem",
     "--proxy-client-cert-file=/etc/kubernetes/pki/front-proxy-client.crt",
     [E + "--proxy-client-cert-file=/etc/kubernetes/pki/front-proxy-client.crt: no such file"]),
    ("--proxy-client-key-file=/etc/kubernetes/ssl/aggregator-key.pem", "--proxy-client-key-file=/etc/kubernetes/ssl",
     [E + "--proxy-client-key-file=/etc/kubernetes/ssl: not a regular file"]),
    # the last occurrence wins, as in kube-apiserver
    ("  --v=2\"", "  --requestheader-group-headers=X-Group --v=2\"",
     [E + f"--requestheader-group-headers=X-Group, expected --requestheader-group-headers=X-Remote-Group {STD}"]),
]


def test_env_file_with_the_handmade_flags_passes_and_each_problem_is_named(lab, make_stack):
    h = handmade_host(lab)
    original = h.config_bytes()
    st = make_stack([h])
    v = Verify(st, h)
    r = v.run()
    assert r.rc == 0 and r.stderr == "", r.stderr
    assert "kube-apiserver.conf (env-file) meets all 8 requirements" in r.stdout
    for old, new, problems in ENV_CASES:
        h.path(h.config_path).write_bytes(original)
        edit(h, old, new)
        r = v.run()
        assert v.problems(r) == problems, f"{old!r} -> {new!r}"
        assert r.rc == (1 if problems else 0), f"{old!r} -> {new!r}: rc {r.rc}"
    # several problems at once: one line each, every one naming the master
    h.path(h.config_path).write_bytes(original)
    edit(h, "  --enable-aggregator-routing=true \\\n", "")
    edit(h, "--requestheader-allowed-names=aggregator", "--requestheader-allowed-names=front-proxy-client")
    os.unlink(h.path(f"{SSL}/aggregator-key.pem"))
    r = v.run()
    assert r.rc == 1 and len(v.problems(r)) == 3 and all(line.startswith(E) for line in v.problems(r))
    assert state_files(h) == []


def test_env_file_without_any_flags_region_is_a_clear_error(lab, make_stack):
    h = handmade_host(lab)
    st = make_stack([h])
    h.path(h.config_path).write_text("# KUBE_APISERVER_OPTS moved to the unit\n")
    r = Verify(st, h).run()
    assert r.rc == 1
    assert re.fullmatch(
        E + r"cannot read /etc/kubernetes/kube-apiserver.conf as layout env-file: no variable assignment holding "
        r"--flags .*\n", r.stderr), r.stderr


def test_verify_delete_keeps_the_scripts_while_a_managed_step_needs_them(lab, make_stack):
    """A host that another stack (or a step not yet deleted) manages with certs/flags keeps the scripts."""
    h = handmade_host(lab)
    st = make_stack([h])
    commands = st.commands()
    assert st.runner.up(commands).ok
    v = Verify(st, h)
    assert v.run().rc == 0
    r = st.runner.run(v.conn, v.delete)
    assert r.rc == 0 and "kept the host scripts" in r.stdout, r.stdout + r.stderr
    assert h.path("/var/lib/metrics-aggregation/scripts").exists()
    out = st.runner.destroy(commands)
    assert out.ok, out.explain()
    assert not h.path("/var/lib/metrics-aggregation/scripts").exists()


def test_verify_delete_keeps_a_state_dir_that_holds_other_state(lab, make_stack):
    """The state dir goes with the scripts only when empty: state left there by another owner (here a
    flags record and backup of a stack that manages a config file without an .owner, as an earlier
    version wrote, and a user's set-aside file) stays, byte for byte."""
    h = kubeadm_host(lab)
    st = make_stack([h], **KUBEADM)
    v = Verify(st, h)
    assert v.run().rc == 0
    other = {"etc_kubernetes_kube-apiserver.conf.record": b"--enable-aggregator-routing\tadded\t\n",
             "replaced/etc_kubernetes_ssl/aggregator-ca.pem.20261202T112233Z": b"the user's CA\n"}
    for name, data in other.items():
        h.put_file(f"/var/lib/metrics-aggregation/{name}", data, 0o600)
    r = st.runner.run(v.conn, v.delete)
    assert r.rc == 0, r.stderr
    state = h.path("/var/lib/metrics-aggregation")
    assert not (state / "scripts").exists()
    assert sorted(str(p.relative_to(state)) for p in state.rglob("*") if p.is_file()) == sorted(other)
    assert all((state / name).read_bytes() == data for name, data in other.items())


def test_after_the_programs_own_apply_verify_passes_on_every_layout(lab, make_stack):
    hosts = [lab.add_host("m-env", "env-file"), lab.add_host("m-unit", "systemd-unit"), lab.add_host("m-pod", "static-pod")]
    st = make_stack(hosts)
    before = {h.name: Verify(st, h).run() for h in hosts}
    for h in hosts:
        r = before[h.name]
        assert r.rc == 1 and len(r.stderr.splitlines()) == 7, r.stderr  # all but allowed-names (unset: any)
        assert f"master {h.name}: error: --proxy-client-key-file is not set" in r.stderr
    commands = st.commands()
    out = st.runner.up(commands)
    assert out.ok, out.explain()
    for h in hosts:
        r = Verify(st, h).run()
        assert r.rc == 0 and "meets all 8 requirements" in r.stdout, f"{h.name}: {r.stderr}"
    assert st.runner.destroy(commands).ok


# ------------------------------------------------------------------ local: the listing, the options
def verify_locally(tmp, layout: str, text: str, *requirements: str) -> subprocess.CompletedProcess:
    cfg = tmp / "cfg"
    cfg.write_bytes(text.encode())
    args = ["bash", str(SCRIPT), "verify", "--master", "t", "--layout", layout, "--config-path", str(cfg),
            "--editor", str(EDITOR), *requirements]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert cfg.read_bytes() == text.encode()
    return r


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.one_of(config_file(), manifest().map(lambda m: ("static-pod", m[0]))), pick=st.integers(0, 100))
def test_verify_reads_the_flags_as_systemd_and_the_kubelet_do(case, pick, tmp_path_factory):
    """Every flag that systemd (EnvironmentFile / ExecStart) or the kubelet would pass, with its last value,
    meets `--require`; one changed value gives exactly one problem line naming it."""
    layout, text = case
    args = standin.static_pod(text)[0] if layout == "static-pod" else words(layout, text)
    flags = dict(a.split("=", 1) for a in args)
    tmp = tmp_path_factory.mktemp("verify")
    if not flags:
        return
    requirements = [x for k, v in flags.items() for x in ("--require", f"{k}={v}")]
    r = verify_locally(tmp, layout, text, *requirements)
    assert r.returncode == 0, r.stderr
    assert f"meets all {len(flags)} requirements" in r.stdout
    name = sorted(flags)[pick % len(flags)]
    wrong = [x if x != f"{name}={flags[name]}" else f"{name}=other" for x in requirements]
    r = verify_locally(tmp, layout, text, *wrong)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"apiserver-aggregation: master t: error: {name}={flags[name]}, expected {name}=other"]


@pytest.mark.parametrize(("options", "message"), [
    ([], "verify needs at least one --require"),
    (["--why", "x", "--require", "--v=2"], "--why must follow a --require"),
    (["--require", "--v=a b"], "requirement --v: a\\ b is not one word of letters"),
    (["--require-file-flag", "--proxy-client-cert-file\n"], "requirement: $'--proxy-client-cert-file\\n' is not one word"),
])
def test_verify_refuses_bad_options_before_reading(tmp_path, options, message):
    state = tmp_path / "state"
    args = ["bash", str(SCRIPT), "verify", "--master", "t", "--layout", "env-file", "--config-path",
            str(tmp_path / "missing.conf"), "--state-dir", str(state), "--editor", str(EDITOR), *options]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.startswith("apiserver-aggregation: master t: error: ") and message in r.stderr, r.stderr
    assert not state.exists()


def test_verify_of_a_missing_config_file_names_it(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "verify", "--master", "cp1", "--layout", "static-pod", "--config-path",
                        str(tmp_path / "kube-apiserver.yaml"), "--require", "--v=2", "--editor", str(EDITOR)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == (f"apiserver-aggregation: master cp1: error: {tmp_path}/kube-apiserver.yaml does not exist "
                        "(layout static-pod): is this the kube-apiserver config file of this master?\n")
