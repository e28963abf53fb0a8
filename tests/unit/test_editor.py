"""The host script's config editor (components/scripts/apiserver-flags-editor.awk) on generated files
(hypothesis), run directly with awk: mawk (Debian's awk) and gawk, both in the Makefile's SYSTEM_PACKAGES.

Property, for env-file and systemd-unit files in many shapes (one flag per line or several, single
line, quotes, comments, blank lines, CRLF, no final newline, pre-existing values of our flags), and for
kubeadm-shaped manifests (static-pod):
  apply  -> each wanted flag exactly once with the wanted value, every line without one of our flags
            unchanged, the file still parses (shell words / ExecStart / the pod's command and mounts);
            applied again, nothing changes;
  revert -> the original bytes through the record, also when the file was edited since.
The script around the editor (backup, state, restart) is tested in tests/hosts/test_local_script.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab import standin

EDITOR = Path(__file__).resolve().parents[2] / "components" / "scripts" / "apiserver-flags-editor.awk"
# POSIX awk: every master has one of these (Debian/Ubuntu mawk, RHEL gawk, busybox on minimal images); the
# editor must mean the same in each
AWKS = ("mawk", "gawk", "busybox awk")

WANT = {
    "--requestheader-client-ca-file": "/etc/kubernetes/ssl/aggregator-ca.pem",
    "--requestheader-allowed-names": "aggregator",
    "--proxy-client-key-file": "/etc/kubernetes/ssl/aggregator-key.pem",
    "--enable-aggregator-routing": "true",
}
OTHER = ["--v=2", "--secure-port=6443", "--allow-privileged=true", "--authorization-mode=Node,RBAC",
         "--service-cluster-ip-range=10.96.0.0/16", "--etcd-servers=https://198.18.0.2:2379"]
PREEXISTING = ["--requestheader-allowed-names=front-proxy-client", "--enable-aggregator-routing=false"]


@dataclass
class Edited:
    rc: int
    text: str  # the editor's output: the new file
    record: str  # apply: the record of the result (NAME<TAB>added|replaced<TAB>OLD)
    report: list[str]  # the changes, one a line
    stderr: str


def edit(awk: str, mode: str, layout: str, text: str, want: dict[str, str] | None = None, record: str = "",
         cert_dir: str = "/etc/kubernetes/ssl") -> Edited:
    """Run the editor as the host script does (edit_config): the file, the flags, the previous record."""
    if shutil.which(awk.split()[0]) is None:
        pytest.fail(f"{awk} is not installed: `make system-deps` installs it (the editor is tested with {', '.join(AWKS)})")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "cfg").write_bytes(text.encode())
        (d / "record").write_text(record)
        args = [*awk.split(), "-v", f"mode={mode}", "-v", f"layout={layout}",
                "-v", "flags=" + " ".join(f"{k}={v}" for k, v in (want or {}).items()),
                "-v", f"record_file={d / 'record' if record else ''}", "-v", f"new_record_file={d / 'new-record'}",
                "-v", f"report_file={d / 'report'}", "-v", f"cert_dir={cert_dir}", "-v", "volume_name=aggregator-certs",
                "-v", "container=kube-apiserver", "-v", f"no_final_newline={int(text != '' and not text.endswith(chr(10)))}",
                "-f", str(EDITOR), str(d / "cfg")]
        r = subprocess.run(args, capture_output=True, timeout=60)
        read = lambda name: (d / name).read_text() if (d / name).exists() else ""  # noqa: E731
        return Edited(r.returncode, r.stdout.decode(), read("new-record"), read("report").splitlines(), r.stderr.decode())


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


def assert_unchanged_on_reapply(awk: str, layout: str, after: str, want: dict[str, str], record: str,
                                cert_dir: str = "/etc/kubernetes/ssl") -> None:
    """Applied again with its own record: the same bytes (the script: "unchanged ... no restart"), the same record."""
    again = edit(awk, "apply", layout, after, want, record, cert_dir)
    assert again.rc == 0 and again.text == after, again.stderr
    assert again.record == record


@pytest.mark.parametrize("awk", AWKS)
@settings(max_examples=40, deadline=None)
@given(case=config_file(), edit_after=st.booleans())
def test_apply_then_revert_round_trips(awk, case, edit_after):
    layout, text = case
    r = edit(awk, "apply", layout, text, WANT)
    assert r.rc == 0, r.stderr
    after = r.text
    args = words(layout, after)
    for k, v in WANT.items():
        assert [a for a in args if a.split("=", 1)[0] == k] == [f"{k}={v}"], (k, after)
    others = [a for a in words(layout, text) if a.split("=", 1)[0] not in WANT]
    assert [a for a in args if a.split("=", 1)[0] not in WANT] == others
    assert without_ours(text, WANT) == without_ours(after, WANT), "a byte outside our flags changed"
    assert_unchanged_on_reapply(awk, layout, after, WANT, r.record)
    if edit_after:  # someone edits the file after the apply: revert must undo only our flags
        after += "# edited by hand\n"
    back = edit(awk, "revert", layout, after, record=r.record)
    assert back.rc == 0, back.stderr
    assert back.text == text + ("# edited by hand\n" if edit_after else "")


KUBEADM = (Path(__file__).resolve().parents[1] / "hosts" / "samples" / "kube-apiserver.yaml").read_text()


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


@pytest.mark.parametrize("awk", AWKS)
@settings(max_examples=12, deadline=None)
@given(case=manifest(), edit_after=st.booleans())
def test_static_pod_apply_then_revert_round_trips(awk, case, edit_after):
    text, cert_dir = case
    want = {
        "--requestheader-client-ca-file": f"{cert_dir}/aggregator-ca.pem",
        "--requestheader-allowed-names": "aggregator",
        "--enable-aggregator-routing": "true",
    }
    r = edit(awk, "apply", "static-pod", text, want, cert_dir=cert_dir)
    assert r.rc == 0, r.stderr
    after = r.text
    flags, mounts = standin.static_pod(after)
    for k, v in want.items():
        assert [a for a in flags if a.split("=", 1)[0] == k] == [f"{k}={v}"]
    assert standin.visible_in_pod(f"{cert_dir}/aggregator-ca.pem", mounts)
    # apart from our flags, only the aggregator-certs mount + volume (and their list keys) were added
    volume_lines = {"volumeMounts:\n", "volumes:\n", "- hostPath:\n", "readOnly: true\n", "type: DirectoryOrCreate\n",
                    f"- mountPath: {cert_dir}\n", f"path: {cert_dir}\n", "name: aggregator-certs\n"}
    kept = iter(without_ours(after, want))
    for line in without_ours(text, want):
        for x in kept:
            if x == line:
                break
            assert x.strip() + "\n" in volume_lines, f"unexpected line {x!r}"
        else:
            raise AssertionError(f"line lost: {line!r}")
    assert_unchanged_on_reapply(awk, "static-pod", after, want, r.record, cert_dir)
    if edit_after:
        after += "# edited by hand\n"
    back = edit(awk, "revert", "static-pod", after, record=r.record, cert_dir=cert_dir)
    assert back.rc == 0, back.stderr
    assert back.text == text + ("# edited by hand\n" if edit_after else "")
