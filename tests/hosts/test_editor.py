"""The host script's config editor on generated files (hypothesis), run locally with bash + mawk.

Property, for env-file and systemd-unit files in many shapes (one flag per line or several, single
line, quotes, comments, blank lines, CRLF, no final newline, pre-existing values of our flags):
  apply  -> each wanted flag exactly once with the wanted value, every line without one of our flags
            unchanged, the file still parses (shell words / ExecStart);
  revert -> the original bytes, both through the backup and through the record (file edited since).
No namespaces needed; marked `hosts` because it runs the real script with bash, awk and curl.
"""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab import standin

pytestmark = pytest.mark.hosts
SCRIPT = Path(__file__).resolve().parents[2] / "components" / "scripts" / "apiserver-aggregation.sh"

WANT = {
    "--requestheader-client-ca-file": "/etc/kubernetes/ssl/aggregator-ca.pem",
    "--requestheader-allowed-names": "aggregator",
    "--proxy-client-key-file": "/etc/kubernetes/ssl/aggregator-key.pem",
    "--enable-aggregator-routing": "true",
}
OTHER = ["--v=2", "--secure-port=6443", "--allow-privileged=true", "--authorization-mode=Node,RBAC",
         "--service-cluster-ip-range=10.96.0.0/16", "--etcd-servers=https://198.18.0.2:2379"]
PREEXISTING = ["--requestheader-allowed-names=front-proxy-client", "--enable-aggregator-routing=false"]


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


@st.composite
def config_file(draw):
    layout = draw(st.sampled_from(["env-file", "systemd-unit"]))
    flags = draw(st.lists(st.sampled_from(OTHER), min_size=0 if layout == "systemd-unit" else 1, max_size=6, unique=True))
    flags += draw(st.lists(st.sampled_from(PREEXISTING), max_size=2, unique=True))
    flags = draw(st.permutations(flags))
    style = draw(st.sampled_from(["per-line", "one-line", "grouped"]))
    indent = draw(st.sampled_from(["  ", "    ", "\t", ""]))
    cont = draw(st.sampled_from([" \\", "  \\", "\\"]))
    if layout == "env-file" and not indent and cont == "\\":
        cont = " \\"  # "--a=b\" + "--c=d" would be ONE shell word: no real file is written that way
    if style == "one-line" or not flags:
        chunks = [" ".join(flags)]
    elif style == "per-line":
        chunks = list(flags)
    else:
        chunks = [" ".join(flags[i : i + 2]) for i in range(0, len(flags), 2)]
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    comments = draw(st.lists(st.sampled_from(["# kube-apiserver options", "#--v=9 commented out", ""]), max_size=2))
    if layout == "env-file":
        q = draw(st.sampled_from(['"', "'"]))
        first, rest = chunks[0], chunks[1:]
        body = [f"KUBE_APISERVER_OPTS={q}{first}" + (cont if rest else q)]
        body += [indent + c + (cont if i < len(rest) - 1 else q) for i, c in enumerate(rest)]
        lines = comments + ["OTHER_VAR=1"] + body + ["TAIL=x"]
    else:
        exec_line = "ExecStart=/usr/local/bin/kube-apiserver"
        if style == "one-line" or not flags:
            body = [exec_line + (" " + chunks[0] if chunks[0] else "")]
        else:
            body = [exec_line + cont] + [indent + c + (cont if i < len(chunks) - 1 else "") for i, c in enumerate(chunks)]
        lines = ["[Unit]", "Description=Kubernetes API Server", "", "[Service]", *comments, *body, "Restart=on-failure"]
    text = nl.join(lines) + (nl if draw(st.booleans()) else "")
    return layout, text


def script(tmp: Path, action: str, layout: str, url: Readyz) -> subprocess.CompletedProcess:
    args = ["bash", str(SCRIPT), action, "--master", "t", "--layout", layout, "--config-path", str(tmp / "cfg"),
            "--cert-dir", "/etc/kubernetes/ssl", "--restart-command", url.restart, "--readyz-url", url,
            "--ready-timeout", "5", "--ready-steady-seconds", "0", "--state-dir", str(tmp / "state")]
    for k, v in WANT.items():
        args += ["--flag", f"{k}={v}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def without_ours(text: str, want: dict[str, str]) -> list[str]:
    """The file's lines with our flag tokens cut out (and lines that only held one of them dropped)."""
    names = "|".join(re.escape(k) for k in want)
    token = re.compile(r"[ \t]*(?:" + names + r")=[^\s\"']*")
    item = re.compile(r"^([ \t]*- )([\"']?)(?:" + names + r")=.*\2(\r?\n)?$")  # a YAML list item
    out = []
    for line in text.splitlines(True):
        cut = item.sub(r"\1\3", line) if item.match(line) else token.sub("", line)
        if cut != line and re.fullmatch(r"[ \t]*(- *)?\\?(\r?\n)?", cut):
            continue
        out.append(cut)
    return out


def words(layout: str, text: str) -> list[str]:
    text = text.replace("\r\n", "\n")
    if layout == "env-file":
        return standin.env_file_args(text, "KUBE_APISERVER_OPTS")
    return standin.unit_args(text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=config_file(), edit_after=st.booleans())
def test_apply_then_revert_round_trips(case, edit_after, readyz, tmp_path_factory, monkeypatch):
    # the script refuses *-file flags whose file is missing: point them at files that exist
    layout, text = case
    tmp = tmp_path_factory.mktemp("editor")
    ssl = tmp / "ssl"
    ssl.mkdir()
    for k in list(WANT):
        if k.endswith("-file"):
            (ssl / Path(WANT[k]).name).write_text("x")
    want = {k: (str(ssl / Path(v).name) if k.endswith("-file") else v) for k, v in WANT.items()}
    monkeypatch.setitem(globals(), "WANT", want)
    cfg = tmp / "cfg"
    cfg.write_bytes(text.encode())
    r = script(tmp, "apply", layout, readyz)
    assert r.returncode == 0, r.stderr
    after = cfg.read_bytes().decode()
    args = words(layout, after)
    for k, v in want.items():
        assert [a for a in args if a.split("=", 1)[0] == k] == [f"{k}={v}"], (k, after)
    others = [a for a in words(layout, text) if a.split("=", 1)[0] not in want]
    assert [a for a in args if a.split("=", 1)[0] not in want] == others
    assert without_ours(text, want) == without_ours(after, want), "a byte outside our flags changed"
    again = script(tmp, "apply", layout, readyz)
    assert again.returncode == 0 and "no restart" in again.stdout and cfg.read_bytes().decode() == after
    if edit_after:  # someone edits the file after the apply: revert must undo only our flags
        cfg.write_bytes(after.encode() + b"# edited by hand\n")
    r = script(tmp, "revert", layout, readyz)
    assert r.returncode == 0, r.stderr
    expected = text + ("# edited by hand\n" if edit_after else "")
    assert cfg.read_bytes().decode() == expected
    assert sorted(p.name for p in (tmp / "state").iterdir()) == []


def test_pending_marker_forces_restart_on_an_unchanged_file(readyz, tmp_path):
    """A run cut off between writing the file and readiness leaves `.pending`: the re-run restarts."""
    cfg = tmp_path / "cfg"
    cfg.write_text('KUBE_APISERVER_OPTS="--v=2"\n')
    marker = tmp_path / "restarted"
    args = ["bash", str(SCRIPT), "apply", "--master", "t", "--layout", "env-file", "--config-path", str(cfg),
            "--cert-dir", "/etc/kubernetes/ssl", "--restart-command", f"touch {marker}; {readyz.restart}",
            "--readyz-url", readyz, "--ready-timeout", "5", "--ready-steady-seconds", "0",
            "--state-dir", str(tmp_path / "state"), "--flag", "--enable-aggregator-routing=true"]
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


KUBEADM = (Path(__file__).resolve().parent / "samples" / "kube-apiserver.yaml").read_text()


@st.composite
def manifest(draw):
    lines = KUBEADM.splitlines(True)
    start = next(i for i, line in enumerate(lines) if line.strip() == "- kube-apiserver") + 1
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("    - "))
    flags = lines[start:end]
    flags = draw(st.lists(st.sampled_from(flags), min_size=1, max_size=len(flags), unique=True))
    extra = draw(st.lists(st.sampled_from([
        "    - --requestheader-allowed-names=front-proxy-client\n",
        '    - "--enable-aggregator-routing=false"\n',
        "    - --requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt\n",
    ]), max_size=3, unique=True))
    body = lines[:start] + draw(st.permutations(flags + extra)) + lines[end:]
    text = "".join(body)
    if draw(st.booleans()):  # a minimal pod: no volumes, no mounts at all
        text = re.sub(r"    volumeMounts:\n(    [- ].*\n|      .*\n)*", "", text)
        text = re.sub(r"  volumes:\n(  [- ].*\n|    .*\n|      .*\n)*", "", text)
    cert_dir = draw(st.sampled_from(["/etc/kubernetes/pki", "/etc/kubernetes/pki/front-proxy", "/etc/kubernetes/ssl"]))
    return text, cert_dir


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=manifest(), edit_after=st.booleans())
def test_static_pod_apply_then_revert_round_trips(case, edit_after, readyz, tmp_path_factory):
    text, cert_dir = case
    tmp = tmp_path_factory.mktemp("pod")
    cfg = tmp / "cfg"
    cfg.write_text(text)
    want = {
        "--requestheader-client-ca-file": f"{cert_dir}/aggregator-ca.pem",
        "--requestheader-allowed-names": "aggregator",
        "--enable-aggregator-routing": "true",
    }
    args = ["bash", str(SCRIPT), "apply", "--master", "t", "--layout", "static-pod", "--config-path", str(cfg),
            "--cert-dir", cert_dir, "--restart-command", readyz.restart, "--readyz-url", readyz, "--ready-timeout", "2",
            "--ready-steady-seconds", "0", "--state-dir", str(tmp / "state")]
    for k, v in want.items():
        args += ["--flag", f"{k}={v}"]
    r = subprocess.run(args + ["--flag", "--v=2"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no such file" in r.stderr  # --requestheader-client-ca-file is checked
    r = subprocess.run(["bash", str(SCRIPT), "check", *args[3:]], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and cfg.read_text() == text
    # apply needs the file to exist: use a cert dir that does, same manifest semantics
    real = tmp / "certs"
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
    # apart from our flags, only the aggregator-certs mount + volume (and their list keys) were added
    volume_lines = {"volumeMounts:\n", "volumes:\n", "- hostPath:\n", "readOnly: true\n", "type: DirectoryOrCreate\n",
                    f"- mountPath: {real}\n", f"path: {real}\n", "name: aggregator-certs\n"}
    kept = iter(without_ours(after, want))
    for line in without_ours(text, want):
        for x in kept:
            if x == line:
                break
            assert x.strip() + "\n" in volume_lines, f"unexpected line {x!r}"
        else:
            raise AssertionError(f"line lost: {line!r}")
    if edit_after:
        cfg.write_text(after + "# edited by hand\n")
    r = subprocess.run([a if a != "apply" else "revert" for a in args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert cfg.read_text() == text + ("# edited by hand\n" if edit_after else "")


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
             "--flag", "--enable-aggregator-routing=true"],
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
