"""Host tier: the host script's side of issue 11 (hardening), run over real SSH on the lab's test hosts.

* the value grammar: the script refuses what the config refuses (components/config.py VALUE_PATTERN),
  option by option, and accepts what it accepts;
* the lock, readiness, kubeadm-shaped manifests, failure safety, ownership of the cert dir and the key:
  each case reproduces a problem of the issue with the program's own commands (or, where the program
  can no longer produce the input, its own command builder with that one input changed).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time

import pytest

from components.apiserver import (
    certs_commands,
    certs_options,
    flags_options,
    host_command,
    host_editor_path,
    host_files_text,
    host_script_path,
)
from components.config import is_safe_value
from lab.hosts import SAMPLES as SAMPLES_DIR
from lab.hosts import Host, sh, wait_for
from tests.hosts.test_rollout import assert_flags_once
from tests.hosts.test_takeover import SSL, cfssl_like_pems
from tests.unit.test_key_owner import BAD as BAD_OWNERS
from tests.unit.test_value_grammar import HOSTILE

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(300)]


# ------------------------------------------------------------------------------------------- helpers
def master_of(st, host: Host):
    st.commands()
    return next(m for m in st.last.settings.masters if m.name == host.name)


def conn_of(st, host: Host) -> dict:
    st.commands()
    return next(c for c in st.last.commands if c["connection"]["host"] == host.address)["connection"]


def step(st, host: Host, kind: str) -> dict:
    st.commands()
    return next(c for c in st.last.commands if c["name"] == f"{host.name}-{kind}")


def install_script(st, host: Host) -> None:
    """The certs step's create: installs the host script (and the certificates), as `up` does first."""
    c = step(st, host, "certs")
    r = st.runner.run(c["connection"], c["create"], c["stdin"])
    assert r.rc == 0, r.stderr


def with_option(options: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    """options with the value of `name` replaced (for --flag: the value of the first flag)."""
    out, done = [], False
    for k, v in options:
        if k == name and not done:
            v = f"{v.split('=', 1)[0]}={value}" if k == "--flag" else value
            done = True
        out.append((k, v))
    assert done, name
    return out


def run_many(st, host: Host, lines: list[str]) -> list[tuple[int, str]]:
    """Run each command line on the host in ONE ssh session; (exit status, stdout+stderr) per line."""
    marker = "@@rc="
    script = "".join(f"{{ {line}; }} 2>&1; echo {marker}$?\n" for line in lines)
    r = st.runner.run(conn_of(st, host), "bash -s", script)
    assert r.rc == 0, r.stderr
    out, chunk = [], []
    for text in r.stdout.splitlines():
        if text.startswith(marker):
            out.append((int(text[len(marker):]), "\n".join(chunk)))
            chunk = []
        else:
            chunk.append(text)
    assert len(out) == len(lines), r.stdout[-2000:]
    return out


def state_listing(host: Host) -> list[str]:
    root = host.path("/var/lib/metrics-aggregation")
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ------------------------------------------------------------------------------- 1. the value grammar
GRAMMAR_OPTIONS = ["--master", "--cert-dir", "--config-path", "--readyz-url", "--key-owner", "--flag"]
ACCEPTED = {
    "--master": ["k8s-master1", "cp.2_a"],
    "--cert-dir": ["/etc/kubernetes/pki/front-proxy", "/etc/k8s/ssl-2"],
    "--config-path": ["/etc/kubernetes/kube-apiserver.conf"],
    "--readyz-url": ["https://localhost:6443/readyz", "http://127.0.0.1:6443/readyz"],
    "--flag": ["X-Remote-Uid", "a,b", "k=v:w", "user@x", "+*~", "/a/b.pem", "10.96.0.0/12"],
}


def test_script_refuses_every_value_the_config_refuses(lab, make_stack):
    """Second line of defence: each HOSTILE value (refused by the config, tests/unit/test_value_grammar.py)
    in each option that reaches the config file or names a file is refused by the script too, naming the
    option, before anything is read or written."""
    h = lab.add_host("m1", "env-file")
    st = make_stack([h])
    install_script(st, h)
    before, config = state_listing(h), h.config_bytes()
    base = flags_options(st.last.settings, master_of(st, h)) + [("--key-owner", "kube:kube")]
    cases = []
    for option in GRAMMAR_OPTIONS:
        for label, value in HOSTILE.items():
            assert not is_safe_value(value), label
            v = value if option in ("--flag", "--master") or value.startswith("/") else "/etc/" + value
            cases.append((option, label, host_command("check", with_option(base, option, v), sudo=False)))
    results = run_many(st, h, [c[2] for c in cases])
    for (option, label, _), (rc, out) in zip(cases, results, strict=True):
        assert rc == 1, f"{option} {label}: {out}"
        assert f"error: {option}" in out and "is not one word of letters" in out, f"{option} {label}: {out}"
    assert state_listing(h) == before and h.config_bytes() == config


def test_script_and_config_agree_on_every_character(lab, make_stack):
    """The two grammars are the same: for every ASCII character (and a non-ASCII letter) in a flag value,
    the script accepts exactly what components.config.is_safe_value accepts; and the accepted samples of
    each option pass both."""
    h = lab.add_host("m1", "env-file")
    st = make_stack([h])
    install_script(st, h)
    base = flags_options(st.last.settings, master_of(st, h))
    cases = []
    for c in [chr(i) for i in range(1, 128)] + ["é", "ß"]:
        cases.append((f"x{c}y", is_safe_value(f"x{c}y"), with_option(base, "--flag", f"x{c}y")))
    for option, values in ACCEPTED.items():
        for v in values:
            assert is_safe_value(v), v
            cases.append((f"{option} {v}", True, with_option(base, option, v)))
    results = run_many(st, h, [host_command("check", o, sudo=False) for _, _, o in cases])
    for (what, ok, _), (rc, out) in zip(cases, results, strict=True):
        refused = "is not one word of letters" in out
        assert refused != ok, f"{what!r}: config {'accepts' if ok else 'refuses'}, the script: rc={rc} {out}"
        assert rc == (0 if ok else 1), f"{what!r}: {out}"


def test_quoted_command_lines_reach_the_script_as_one_word():
    """The test's own premise: host_command quotes each option as one shell word (a hostile value is
    delivered to the script intact, so its refusal is the script's)."""
    line = host_command("check", [("--master", "m1"), ("--cert-dir", HOSTILE["second flags"])], sudo=False)
    argv = shlex.split(line)
    assert argv[argv.index("--cert-dir") + 1] == HOSTILE["second flags"]
    assert host_script_path() in line


# ------------------------------------------------------------------------------------------- 2. the lock
RESTARTS_LOG = "/etc/kubernetes/restarts.log"
# a restart that takes a while, logging when it begins and ends (to see two restarts overlap)
SLOW_RESTART = (f'echo "b $(date +%s.%N)" >> {RESTARTS_LOG}; sleep 1; systemctl restart kube-apiserver; '
                f'echo "e $(date +%s.%N)" >> {RESTARTS_LOG}')


def max_concurrent_restarts(host: Host) -> int:
    events = sorted((float(t), kind) for kind, t in (x.split() for x in host.path(RESTARTS_LOG).read_text().splitlines()))
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "b" else -1
        peak = max(peak, running)
    return peak


def in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return t, out


def test_a_b_c_restarts_never_overlap(lab, make_stack):
    """Issue 11: A (a revert) holds the lock, B (an apply) waits on it, C (an apply) starts after A ended.
    A deleted its lock file when it was done, so B ran on the deleted file's lock and C on a new one: both
    restarted at once. Now B re-checks its lock file and one run at a time restarts.

    Only the flags step runs (the cert files are put in place by hand, the script installed by a refused
    install-certs), so after A's revert nothing else of ours is left and A does delete the lock file."""
    pems = cfssl_like_pems()
    h = lab.add_host("m1", "env-file", files={f"{SSL}/{n}": (b, 0o644, 0, 0) for n, b in pems.items()})
    st = make_stack([h], apiserver={"readyTimeoutSeconds": 20, "restartCommand": SLOW_RESTART})
    certs, flags = step(st, h, "certs"), step(st, h, "flags")
    r = st.runner.run(certs["connection"], certs["create"], host_files_text())  # installs the script; no PEMs
    assert r.rc == 1 and "refusing to install certificates" in r.stderr
    conn = flags["connection"]
    r = st.runner.run(conn, flags["create"])
    assert r.rc == 0, r.stderr
    h.path(RESTARTS_LOG).write_text("")
    state = h.path("/var/lib/metrics-aggregation")
    a, a_out = in_thread(lambda: st.runner.run(conn, flags["delete"]))
    wait_for(lambda: any(p.name.endswith(".pending") for p in state.iterdir()), "A holds the lock (its .pending)", 20)
    b, b_out = in_thread(lambda: st.runner.run(conn, flags["create"]))
    time.sleep(0.5)  # B is queued on A's lock
    a.join(60)
    assert a_out and a_out[0].rc == 0, a_out
    c, c_out = in_thread(lambda: st.runner.run(conn, flags["create"]))
    b.join(90)
    c.join(90)
    assert b_out[0].rc == 0 and c_out[0].rc == 0, (b_out[0].stderr, c_out[0].stderr)
    assert max_concurrent_restarts(h) == 1, h.path(RESTARTS_LOG).read_text()
    assert_flags_once(h, st.flags_for(h))
    assert "unchanged" in c_out[0].stdout + b_out[0].stdout  # the second of the two found the work done


def test_a_daemon_left_by_the_restart_command_does_not_keep_the_lock(lab, make_stack):
    """Issue 11: the restart command inherited the lock's fd; a daemon it left behind held the lock, and
    the next apply/revert failed with 'held'."""
    h = lab.add_host("m1", "env-file")
    st = make_stack([h], apiserver={"restartCommand": "systemctl restart kube-apiserver && (setsid sleep 300 >/dev/null 2>&1 &)"})
    out = st.up()
    assert out.ok, out.explain()
    daemons = [p for p in sh("ip", "netns", "pids", h.ns).stdout.split()
               if open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")[:2] == [b"sleep", b"300"]]
    assert daemons, "the restart command left no daemon behind: the test would prove nothing"
    started = time.monotonic()
    out = st.destroy()
    assert out.ok, out.explain()
    assert time.monotonic() - started < 30
    assert "held" not in out.explain()


def test_install_certs_waits_for_a_running_revert(lab, make_stack):
    """Issue 11: install-certs took no lock, so it ran in the middle of another stack's (or an operator's)
    apply/revert on the same host. Now it queues on the host lock: it ends after the revert ended."""
    h = lab.add_host("m1", "env-file")
    st = make_stack([h], apiserver={"readyTimeoutSeconds": 20, "restartCommand": SLOW_RESTART})
    out = st.up()
    assert out.ok, out.explain()
    certs, flags = (next(c for c in st.last.commands if c["name"] == f"m1-{k}") for k in ("certs", "flags"))
    state = h.path("/var/lib/metrics-aggregation")
    a, a_out = in_thread(lambda: st.runner.run(flags["connection"], flags["delete"]))
    wait_for(lambda: any(p.name.endswith(".pending") for p in state.iterdir()), "the revert holds the lock", 20)
    r = st.runner.run(certs["connection"], certs["create"], certs["stdin"])
    a.join(60)
    assert a_out[0].rc == 0 and r.rc == 0, (a_out[0].stderr, r.stderr)
    assert r.end >= a_out[0].end - 0.5, f"install-certs ended {a_out[0].end - r.end:.1f}s before the revert"


# ------------------------------------------------------------------------------------------ 3. readiness
def test_a_flapping_readyz_rolls_back(lab, make_stack):
    """Issue 11: /readyz answered 200 once after the restart, then 500, and the script said "ready after
    0.0s, done". Ready now means a steady run of 200s: the flapping apiserver is rolled back."""
    h = lab.add_host("m1", "env-file")
    original = h.config_bytes()
    h.flap("--enable-aggregator-routing=true")  # the new flags make this apiserver flap
    st = make_stack([h], apiserver={"readyTimeoutSeconds": 8, "readySteadySeconds": 2})
    out = st.up()
    r = out["m1-flags"]
    assert r.rc == 1, out.explain()
    assert "not for 2s in a row" in r.stderr and "a flapping start" in r.stderr, r.stderr
    assert "the previous file is back and kube-apiserver is ready on it" in r.stderr, r.stderr
    assert h.config_bytes() == original
    assert "--enable-aggregator-routing" not in h.running_flags()


def test_a_static_pod_the_kubelet_does_not_replace_is_not_ready(lab, make_stack):
    """Issue 11: when /readyz never went down after the manifest changed, the old pod's 200 was accepted
    (a warning, then "done"), though the running apiserver had none of the flags. Without a sign of a
    restart (a new listening process, or readyz going down) the master is not ready: rolled back."""
    h = lab.add_host("m1", "static-pod", kubelet_delay=60)  # a kubelet that does not act on the change
    original = h.config_bytes()
    st = make_stack([h], apiserver={"readyTimeoutSeconds": 5})
    out = st.up()
    r = out["m1-flags"]
    assert r.rc == 1, out.explain()
    assert "no sign that kube-apiserver restarted" in r.stderr and "is the kubelet running" in r.stderr, r.stderr
    assert h.config_bytes() == original
    assert h.restarts() == 0


def test_a_restart_command_that_restarts_nothing_is_not_ready(lab, make_stack):
    """The same for systemd layouts: a restart command that does not restart the apiserver (here `true`)
    was "ready after 0.0s" on the old process."""
    h = lab.add_host("m1", "env-file")
    original = h.config_bytes()
    st = make_stack([h], apiserver={"readyTimeoutSeconds": 4, "restartCommand": "true"})
    out = st.up()
    r = out["m1-flags"]
    assert r.rc == 1, out.explain()
    assert "no sign that kube-apiserver restarted" in r.stderr and "apiserver.restartCommand" in r.stderr, r.stderr
    assert h.config_bytes() == original


PROXY = "http://127.0.0.1:9"  # nothing listens there: a request sent through it fails


def test_proxy_variables_of_the_master_are_ignored(lab, make_stack):
    """Issue 11: with https_proxy in the master's environment, curl sent the readyz request to the proxy;
    the script restarted, rolled back and said "nothing answered" though the apiserver was fine."""
    env = {k: PROXY for k in ("https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "all_proxy")}
    h = lab.add_host("m1", "env-file", sshd_env=env)
    st = make_stack([h])
    conn = conn_of(st, h)
    # the premise: the variables reach the script's environment, and a plain curl goes through the proxy
    r = st.runner.run(conn, "printenv https_proxy; curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1:6443/readyz")
    assert r.stdout.splitlines() == [PROXY, "000"], r.stdout + r.stderr
    out = st.up()
    assert out.ok, out.explain()
    assert_flags_once(h, st.flags_for(h))
    assert h.restarts() == 1


# ------------------------------------------------------------------------------------------ 7. ownership
KEY = f"{SSL}/aggregator-key.pem"


def test_key_owner_owns_the_key_and_a_change_rechowns_it(lab, make_stack):
    """Issue 11: the proxy-client key was always root:root 0600, which an apiserver run as User=kube cannot
    read. apiserver.keyOwner (--key-owner on install-certs) owns the key; the certificates stay root 0644;
    a changed owner re-chowns the key; the same owner again changes nothing; remove-certs ignores it."""
    import grp
    import pwd

    user = lab.ensure_ops_user()
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(user).gr_gid
    h = lab.add_host("m1", "env-file")
    st = make_stack([h], apiserver={"keyOwner": f"{user}:{user}"})
    out = st.up()
    assert out.ok, out.explain()
    assert h.file_state(KEY)[1:] == (0o600, uid, gid)
    for name in ("aggregator-ca.pem", "aggregator.pem"):
        assert h.file_state(f"{SSL}/{name}")[1:] == (0o644, 0, 0), name
    # the same step of that `up` again (a new evaluation of the program would issue new certificates)
    certs = next(c for c in st.last.commands if c["name"] == "m1-certs")
    r = st.runner.run(certs["connection"], certs["create"], certs["stdin"])
    assert r.rc == 0 and r.stdout.count("unchanged") == 3, r.stdout + r.stderr
    st.config["apiserver"]["keyOwner"] = f"0:{gid}"
    out = st.up(update=True)
    assert out.ok, out.explain()
    assert h.file_state(KEY)[1:] == (0o600, 0, gid)
    assert f"{KEY} written (0600 0:{gid})" in out["m1-certs"].stdout
    out = st.destroy()
    assert out.ok, out.explain()
    assert not h.path(SSL).exists()


def test_an_unknown_key_owner_is_refused_before_anything_is_written(lab, make_stack):
    h = lab.add_host("m1", "env-file")
    st = make_stack([h], apiserver={"keyOwner": "nosuchuser9:nosuchuser9"})
    out = st.up()
    r = out["m1-certs"]
    assert r.rc == 1, out.explain()
    assert "apiserver.keyOwner: there is no user 'nosuchuser9' on this master" in r.stderr, r.stderr
    assert not h.path(SSL).exists()
    assert state_listing(h) == ["scripts", *sorted(f"scripts/{p.rsplit('/', 1)[1]}" for p in (host_script_path(), host_editor_path()))]


@pytest.mark.parametrize("what", ["cert dir owned by another user", "group-writable cert dir", "world-writable config"])
def test_an_untrusted_cert_dir_or_config_file_is_refused(lab, make_stack, what):
    """Issue 11: a cert dir that was not root-owned, or group/other-writable, was accepted, though
    aggregator-ca.pem is a trust anchor for impersonating any user. Refused now, with the reason."""
    h = lab.add_host("m1", "env-file")
    original = h.config_bytes()
    ssl = h.path(SSL)
    ssl.mkdir(mode=0o755)
    if what == "cert dir owned by another user":
        os.chown(ssl, 4711, 0)
        expected = f"refusing the cert dir {SSL}: it is owned by uid 4711, not root"
    elif what == "group-writable cert dir":
        os.chmod(ssl, 0o775)
        expected = f"refusing the cert dir {SSL}: mode 775 lets its group or others write it"
    else:
        os.chmod(h.path(h.config_path), 0o646)
        expected = f"refusing the config file {h.config_path}: mode 646 lets its group or others write it"
    st = make_stack([h])
    out = st.up()
    assert not out.ok
    step_name = "m1-flags" if "config" in what else "m1-certs"
    r = out[step_name]
    assert r.rc == 1 and expected in r.stderr and "nothing written" in r.stderr, out.explain()
    assert h.config_bytes() == original and h.restarts() == 0
    if step_name == "m1-certs":
        assert list(ssl.iterdir()) == []


@pytest.mark.parametrize("what", ["cert dir", "config file"])
def test_destroy_after_an_admin_made_a_path_group_writable(lab, make_stack, what):
    """Review finding: revert checked the cert dir (which it never writes) and died on it, so a cert dir made
    group-writable after `up` made destroy impossible. Now only install-certs checks the cert dir, and
    revert only warns about the config file: it must give the user their file back."""
    h = lab.add_host("m1", "env-file")
    original = h.config_bytes()
    st = make_stack([h])
    out = st.up()
    assert out.ok, out.explain()
    path = SSL if what == "cert dir" else h.config_path
    os.chmod(h.path(path), 0o775 if what == "cert dir" else 0o664)
    restarts = h.restarts()
    out = st.destroy()
    assert out.ok, out.explain()
    assert h.config_bytes() == original and h.restarts() == restarts + 1
    assert not any(k in h.running_flags() for k in st.flags_for(h))
    assert not h.path(SSL).exists()
    flags = out["m1-flags"].stderr
    if what == "config file":
        assert f"warning: the config file {h.config_path} is not safe: mode 664 lets its group or others write it" in flags
        assert "reverting it anyway" in flags
    else:
        assert "cert dir" not in flags


def test_key_owners_the_config_refuses_are_refused_by_install_certs(lab, make_stack):
    """The --key-owner pattern (config KEY_OWNER_PATTERN) checked again by the script, nothing written."""
    h = lab.add_host("m1", "env-file")
    st = make_stack([h])
    certs = step(st, h, "certs")
    base = certs_options(st.last.settings, master_of(st, h))
    for owner in [b for b in BAD_OWNERS if b]:
        create, _ = certs_commands(base + [("--key-owner", owner)], sudo=False)
        r = st.runner.run(certs["connection"], create, certs["stdin"])
        assert r.rc == 1, (owner, r.stdout)
        assert any(why in r.stderr for why in ("must be USER:GROUP", "is not one word of letters", "is out of range")), (owner, r.stderr)
        assert "apiserver.keyOwner" in r.stderr or "--key-owner" in r.stderr, (owner, r.stderr)
    assert not h.path(SSL).exists()


# ------------------------------------------------------------------------------------- 5. failure safety
def nsenter_mount(h: Host, *args: str) -> None:
    """mount/umount inside the host's mount namespace (the one its sshd serves)."""
    subprocess.run(["nsenter", "-t", str(h.supervisor.pid), "-m", "--", *args], check=True, capture_output=True, timeout=10)


def test_a_full_state_dir_leaves_the_config_untouched_or_fully_applied(lab, make_stack):
    """Issue 11: with the state dir full, the new config was already in place, with no restart and no
    rollback (the checksum was written after the config, and some write failures were ignored). For
    every amount of free space (a tmpfs of 1, 2, 3, ... pages as the state dir), apply either fails
    leaving the config byte-identical and the apiserver untouched, or succeeds with the flags running."""
    h = lab.add_host("m1", "env-file")
    st = make_stack([h])
    install_script(st, h)  # and the certificates
    original = h.config_bytes()
    tiny = "/var/lib/metrics-aggregation/tiny"
    h.path(tiny).mkdir()
    options = flags_options(st.last.settings, master_of(st, h)) + [("--state-dir", tiny)]
    apply = host_command("apply", options, sudo=False)
    conn = conn_of(st, h)
    failures = 0
    for pages in range(1, 41):
        nsenter_mount(h, "mount", "-t", "tmpfs", "-o", f"size={4 * pages}k,mode=0700", "tmpfs", tiny)
        restarts = h.restarts()
        r = st.runner.run(conn, apply)
        if r.rc == 0:
            assert_flags_once(h, st.flags_for(h))
            assert {k: h.running_flags().get(k) for k in st.flags_for(h)} == st.flags_for(h)
            break
        failures += 1
        assert h.config_bytes() == original, f"{pages} pages: the config changed on a failed apply:\n{r.stdout}{r.stderr}"
        assert h.restarts() == restarts and h.readyz() == 200, f"{pages} pages"
        assert "disk full" in r.stderr or "cannot write" in r.stderr or "cannot create" in r.stderr, r.stderr
        nsenter_mount(h, "umount", tiny)
    else:
        raise AssertionError("apply never succeeded, even with 160 KiB free")
    assert failures >= 3, "the sweep never ran out of space: it tested nothing"


def test_a_symlinked_config_path_keeps_its_link(lab, make_stack):
    """Issue 11: a config path that is a symbolic link was replaced by a plain file: the link's target
    was never edited, and revert did not bring the link back. Now the target is edited and reverted."""
    h = lab.add_host("m1", "env-file")
    link = h.path(h.config_path)
    target = link.parent / "units" / link.name
    target.parent.mkdir()
    original = link.read_bytes()
    target.write_bytes(original)
    link.unlink()
    link.symlink_to(f"units/{link.name}")  # relative: the same file inside the host and on the runner
    st = make_stack([h])
    out = st.up()
    assert out.ok, out.explain()
    assert link.is_symlink() and os.readlink(link) == f"units/{link.name}"
    assert_flags_once(h, st.flags_for(h))
    assert {k: h.running_flags().get(k) for k in st.flags_for(h)} == st.flags_for(h)
    assert [p.name for p in target.parent.iterdir()] == [link.name]  # no temp file left next to it
    out = st.destroy()
    assert out.ok, out.explain()
    assert link.is_symlink() and target.read_bytes() == original


# ---------------------------------------------------------------------------------------- 4. static pods
FULL = "kube-apiserver-kubeadm-full.yaml"  # kubeadm-shaped: initContainer, args, comments, extra volumes, sidecar


def kubeadm_full_host(lab, text: str | None = None, container: str = "kube-apiserver") -> Host:
    """A kubeadm master whose manifest is tests/hosts/samples/kube-apiserver-kubeadm-full.yaml (or `text`),
    with the front-proxy files and the audit policy it names, running."""
    pems = cfssl_like_pems()
    pki = "/etc/kubernetes/pki"
    files = {
        f"{pki}/front-proxy-ca.crt": (pems["aggregator-ca.pem"], 0o644, 0, 0),
        f"{pki}/front-proxy-client.crt": (pems["aggregator.pem"], 0o644, 0, 0),
        f"{pki}/front-proxy-client.key": (pems["aggregator-key.pem"], 0o600, 0, 0),
        "/etc/kubernetes/audit-policy.yaml": (b"apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n", 0o644, 0, 0),
    }
    if text is not None:
        files["/etc/kubernetes/manifests/kube-apiserver.yaml"] = (text.encode(), 0o644, 0, 0)
    return lab.add_host("k8s-cp1", "static-pod", sample=FULL, files=files, container=container)


def block(text: str, start: str, end: str) -> str:
    """The lines of `text` from the line `start` up to (not including) the next line `end`."""
    lines = text.splitlines(True)
    a = lines.index(start + "\n")
    b = next(i for i in range(a + 1, len(lines)) if lines[i] == end + "\n")
    return "".join(lines[a:b])


def test_kubeadm_manifest_init_container_args_comments_and_volumes(lab, make_stack):
    """Issue 11: the first `command:` of the file was edited (with an initContainer, every flag went into
    its `sh -c`), a `# comment` inside the list ended it (a flag after the comment was not seen, so the
    file had it twice and the old value won) and `args:` was never read. Now only the kube-apiserver
    container's command: changes: the initContainer and the sidecar stay byte for byte, its args: too,
    the pre-existing front-proxy values after the comments are replaced once, and the cert dir is mounted
    into that container (not the sidecar) next to the extra volumes."""
    h = kubeadm_full_host(lab)
    before = h.config_bytes().decode()
    st = make_stack([h], apiserver={"certDir": "/etc/kubernetes/aggregator"})
    out = st.up()
    assert out.ok, out.explain()
    after = h.config_bytes().decode()
    assert block(after, "  initContainers:", "  containers:") == block(before, "  initContainers:", "  containers:")
    sidecar = block(before, "  - command:", "  hostNetwork: true").split("  - command:\n")[-1]
    assert after.count(sidecar) == 1  # the sidecar's lines, unchanged (and no mount added to it)
    assert block(after, "  - args:", "    command:") == block(before, "  - args:", "    command:")
    assert "    # aggregation layer (kubeadm's front-proxy)\n" in after and "    # serving\n" in after
    flags = st.flags_for(h)
    args = h.config_args()  # the kube-apiserver container: command after the binary, then args
    for k, v in flags.items():
        assert [a for a in args if a.split("=", 1)[0] == k] == [f"{k}={v}"], (k, after)
    assert {k: h.running_flags().get(k) for k in flags} == flags
    assert h.running_flags()["--audit-policy-file"] == "/etc/kubernetes/audit-policy.yaml"
    out = st.destroy()
    assert out.ok, out.explain()
    assert h.config_bytes().decode() == before


@pytest.mark.parametrize("style", ["block", "flow"])
def test_a_managed_flag_in_args_is_refused_and_the_manifest_left_alone(lab, make_stack, style):
    """Issue 11: `args: [--requestheader-allowed-names=front-proxy-client]` silently overrode the value the
    program set in command: (kube-apiserver reads command, then args: the last value wins). Refused now,
    naming the flag, before anything is written."""
    text = (SAMPLES_DIR / FULL).read_text()
    moved = "    - --requestheader-allowed-names=front-proxy-client\n"
    assert moved in text
    text = text.replace(moved, "")
    if style == "block":
        text = text.replace("  - args:\n", "  - args:\n" + moved)
    else:
        text = text.replace(block(text, "  - args:", "    command:"),
                            "  - args: [--requestheader-allowed-names=front-proxy-client, --v=2]\n")
    h = kubeadm_full_host(lab, text)
    before = h.config_bytes()
    st = make_stack([h])
    out = st.up()
    r = out["k8s-cp1-flags"]
    assert r.rc == 1, out.explain()
    assert "sets --requestheader-allowed-names in args:" in r.stderr and "nothing written" in r.stderr, r.stderr
    assert h.config_bytes() == before and h.restarts() == 0
    assert not any(p.name.endswith((".record", ".orig", ".pending")) for p in h.path("/var/lib/metrics-aggregation").iterdir())


def test_the_container_name_is_configurable(lab, make_stack):
    """apiserver.containerName: a manifest whose apiserver container has another name."""
    text = (SAMPLES_DIR / FULL).read_text().replace("    name: kube-apiserver\n", "    name: apiserver\n")
    h = kubeadm_full_host(lab, text, container="apiserver")
    before = h.config_bytes()
    st = make_stack([h])
    out = st.up()
    assert out["k8s-cp1-flags"].rc == 1 and "no container named kube-apiserver" in out["k8s-cp1-flags"].stderr
    assert h.config_bytes() == before
    st = make_stack([h], apiserver={"containerName": "apiserver"})
    out = st.up()
    assert out.ok, out.explain()
    assert {k: h.running_flags().get(k) for k in st.flags_for(h)} == st.flags_for(h)
