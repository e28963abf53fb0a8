"""The host script around its editor, run locally with bash (no namespaces): the backup and the state
files, the `.pending` re-run rule, the *-file check, `check`, and a readyz that refuses anonymous
requests. The editor itself (every layout, generated files) is tested directly with awk in
tests/unit/test_editor.py. Marked `hosts` because it runs the real script with bash, awk and curl.
"""

from __future__ import annotations

import http.server
import subprocess
import threading
from pathlib import Path

import pytest

from lab import standin
from tests.unit.test_editor import KUBEADM, WANT, without_ours, words

pytestmark = pytest.mark.hosts
SCRIPTS = Path(__file__).resolve().parents[2] / "components" / "scripts"
SCRIPT = SCRIPTS / "apiserver-aggregation.sh"
EDITOR = SCRIPTS / "apiserver-flags-editor.awk"


class Readyz(str):
    """The URL of a local /readyz that answers 200, plus `restart`: a command that plays the apiserver's
    restart for the script (the next /readyz answers 500: the script's evidence that a restart happened)."""

    restart: str


@pytest.fixture(scope="module")
def readyz():
    down = {"next": 0}

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/restart":
                down["next"] = 1
                code = 200
            elif down["next"] > 0:
                down["next"] -= 1
                code = 500
            else:
                code = 200
            self.send_response(code)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = Readyz(f"http://127.0.0.1:{srv.server_port}/readyz")
    url.restart = f"curl --noproxy '*' -s -o /dev/null http://127.0.0.1:{srv.server_port}/restart"
    yield url
    srv.shutdown()


def script(tmp: Path, action: str, layout: str, url: Readyz, want: dict[str, str]) -> subprocess.CompletedProcess:
    args = ["bash", str(SCRIPT), action, "--master", "t", "--layout", layout, "--config-path", str(tmp / "cfg"),
            "--cert-dir", "/etc/kubernetes/ssl", "--restart-command", url.restart, "--readyz-url", url,
            "--ready-timeout", "5", "--ready-steady-seconds", "0", "--state-dir", str(tmp / "state"),
            "--editor", str(EDITOR)]
    for k, v in want.items():
        args += ["--flag", f"{k}={v}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


# env-file and systemd-unit files in the shapes the editor test generates: one flag per line with CRLF,
# one line without a final newline, a unit with a pre-existing value of one of our flags
FILES = {
    "env-file per line, CRLF": ("env-file", 'OTHER_VAR=1\r\nKUBE_APISERVER_OPTS="--v=2 \\\r\n  --secure-port=6443 \\\r\n'
                                            '  --enable-aggregator-routing=false"\r\nTAIL=x\r\n'),
    "env-file one line, no final newline": ("env-file", "# kube-apiserver options\nKUBE_APISERVER_OPTS='--v=2 "
                                                        "--authorization-mode=Node,RBAC'\nTAIL=x"),
    "systemd-unit": ("systemd-unit", "[Unit]\nDescription=Kubernetes API Server\n\n[Service]\n"
                                     "ExecStart=/usr/local/bin/kube-apiserver \\\n    --v=2 \\\n"
                                     "    --requestheader-allowed-names=front-proxy-client\nRestart=on-failure\n"),
}


@pytest.mark.parametrize("edit_after", [False, True], ids=["revert from the backup", "revert from the record"])
@pytest.mark.parametrize("case", FILES.values(), ids=FILES.keys())
def test_apply_then_revert_round_trips(case, edit_after, readyz, tmp_path):
    # the script refuses *-file flags whose file is missing: point them at files that exist
    layout, text = case
    ssl = tmp_path / "ssl"
    ssl.mkdir()
    for k in list(WANT):
        if k.endswith("-file"):
            (ssl / Path(WANT[k]).name).write_text("x")
    want = {k: (str(ssl / Path(v).name) if k.endswith("-file") else v) for k, v in WANT.items()}
    cfg = tmp_path / "cfg"
    cfg.write_bytes(text.encode())
    r = script(tmp_path, "apply", layout, readyz, want)
    assert r.returncode == 0, r.stderr
    after = cfg.read_bytes().decode()
    args = words(layout, after)
    for k, v in want.items():
        assert [a for a in args if a.split("=", 1)[0] == k] == [f"{k}={v}"], (k, after)
    assert without_ours(text, want) == without_ours(after, want), "a byte outside our flags changed"
    again = script(tmp_path, "apply", layout, readyz, want)
    assert again.returncode == 0 and "no restart" in again.stdout and cfg.read_bytes().decode() == after
    if edit_after:  # someone edits the file after the apply: revert must undo only our flags
        cfg.write_bytes(after.encode() + b"# edited by hand\n")
    r = script(tmp_path, "revert", layout, readyz, want)
    assert r.returncode == 0, r.stderr
    expected = text + ("# edited by hand\n" if edit_after else "")
    assert cfg.read_bytes().decode() == expected
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == []


def test_pending_marker_forces_restart_on_an_unchanged_file(readyz, tmp_path):
    """A run cut off between writing the file and readiness leaves `.pending`: the re-run restarts."""
    cfg = tmp_path / "cfg"
    cfg.write_text('KUBE_APISERVER_OPTS="--v=2"\n')
    marker = tmp_path / "restarted"
    args = ["bash", str(SCRIPT), "apply", "--master", "t", "--layout", "env-file", "--config-path", str(cfg),
            "--cert-dir", "/etc/kubernetes/ssl", "--restart-command", f"touch {marker}; {readyz.restart}",
            "--readyz-url", readyz, "--ready-timeout", "5", "--ready-steady-seconds", "0",
            "--state-dir", str(tmp_path / "state"), "--flag", "--enable-aggregator-routing=true", "--editor", str(EDITOR)]
    assert subprocess.run(args, capture_output=True, timeout=60).returncode == 0
    assert marker.exists()
    marker.unlink()
    (tmp_path / "state" / (str(cfg).lstrip("/").replace("/", "_") + ".pending")).write_text("")
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "previous run stopped before kube-apiserver was ready" in r.stdout
    assert marker.exists()
    assert not (tmp_path / "state" / (str(cfg).lstrip("/").replace("/", "_") + ".pending")).exists()
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert "no restart" in r.stdout


def test_restart_output_is_cut_short(readyz, tmp_path):
    """The flags step's stdout is streamed while it runs (components/apiserver.py STEP_LOGGING), and
    pulumi-command hangs on a streamed line over 64 KiB: a restart command's own output is cut to its last 20
    lines of at most 300 bytes."""
    cfg = tmp_path / "cfg"
    cfg.write_text('KUBE_APISERVER_OPTS="--v=2"\n')
    noisy = f"seq 1 50; head -c 100000 /dev/zero | tr '\\0' x; echo; {readyz.restart}"
    args = ["bash", str(SCRIPT), "apply", "--master", "t", "--layout", "env-file", "--config-path", str(cfg),
            "--cert-dir", "/etc/kubernetes/ssl", "--restart-command", noisy, "--readyz-url", readyz,
            "--ready-timeout", "5", "--ready-steady-seconds", "0", "--state-dir", str(tmp_path / "state"),
            "--flag", "--enable-aggregator-routing=true", "--editor", str(EDITOR)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 304, max(lines, key=len)[:80]
    shown = [line.strip() for line in lines if line.startswith("    ")]
    assert shown == [str(n) for n in range(32, 51)] + ["x" * 300], shown  # the last 20 lines, cut
    assert "done: aggregation flags active" in r.stdout


@pytest.mark.parametrize("cert_dir", ["/etc/kubernetes/pki", "/etc/kubernetes/ssl"])
def test_static_pod_file_flags_check_and_round_trip(cert_dir, readyz, tmp_path):
    """A *-file flag naming a missing file is refused (kube-apiserver would exit); `check` changes nothing;
    apply mounts the cert dir into the pod and revert gives back the manifest."""
    text = KUBEADM
    cfg = tmp_path / "cfg"
    cfg.write_text(text)
    want = {
        "--requestheader-client-ca-file": f"{cert_dir}/aggregator-ca.pem",
        "--requestheader-allowed-names": "aggregator",
        "--enable-aggregator-routing": "true",
    }
    args = ["bash", str(SCRIPT), "apply", "--master", "t", "--layout", "static-pod", "--config-path", str(cfg),
            "--cert-dir", cert_dir, "--restart-command", readyz.restart, "--readyz-url", readyz, "--ready-timeout", "2",
            "--ready-steady-seconds", "0", "--state-dir", str(tmp_path / "state"), "--editor", str(EDITOR)]
    for k, v in want.items():
        args += ["--flag", f"{k}={v}"]
    r = subprocess.run(args + ["--flag", "--v=2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no such file" in r.stderr  # --requestheader-client-ca-file is checked
    r = subprocess.run(["bash", str(SCRIPT), "check", *args[3:]], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and cfg.read_text() == text
    # apply needs the file to exist: use a cert dir that does, same manifest semantics
    real = tmp_path / "certs"
    real.mkdir()
    (real / "aggregator-ca.pem").write_text("x")
    args = [a.replace(cert_dir, str(real)) for a in args]
    want = {k: v.replace(cert_dir, str(real)) for k, v in want.items()}
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    after = cfg.read_text()
    flags, mounts = standin.static_pod(after)
    for k, v in want.items():
        assert [a for a in flags if a.split("=", 1)[0] == k] == [f"{k}={v}"]
    assert standin.visible_in_pod(f"{real}/aggregator-ca.pem", mounts)
    r = subprocess.run([a if a != "apply" else "revert" for a in args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert cfg.read_text() == text


def test_readyz_refusing_anonymous_requests_rolls_back_with_a_hint(tmp_path):
    """--anonymous-auth=false: /readyz answers 401 and never 200; apply restores the file and says why."""

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(401)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg = tmp_path / "cfg"
        original = 'KUBE_APISERVER_OPTS="--anonymous-auth=false --v=2"\n'
        cfg.write_text(original)
        r = subprocess.run(
            ["bash", str(SCRIPT), "apply", "--master", "cp9", "--layout", "env-file", "--config-path", str(cfg),
             "--cert-dir", "/etc/kubernetes/ssl", "--restart-command", "true", "--ready-timeout", "1",
             "--readyz-url", f"http://127.0.0.1:{srv.server_port}/readyz", "--state-dir", str(tmp_path / "state"),
             "--flag", "--enable-aggregator-routing=true", "--editor", str(EDITOR)],
            capture_output=True, text=True, timeout=60,
        )
    finally:
        srv.shutdown()
    assert r.returncode == 1
    assert "master cp9" in r.stderr and ": 401; readyz refuses anonymous requests" in r.stderr
    assert "+ --enable-aggregator-routing=true" in r.stderr
    assert cfg.read_text() == original
    assert "NOT ready on it either" in r.stderr  # readyz never says 200 here, even on the old file
    # no record or backup of a change that did not happen; `.pending` stays: readiness is unconfirmed
    assert sorted(p.suffix for p in (tmp_path / "state").iterdir()) == [".lock", ".pending"]
