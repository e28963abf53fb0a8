"""The cluster side of a CA rotation (docs/ca-rotation.md): the gate before the proxy cert is re-signed, and
the prune of the old CA from kube-system/extension-apiserver-authentication. The program runs it as the
local command `<old CA>-retirement` during `up` (components/ca_rotation.py); by hand:

    venv/bin/python -m components.ca_retirement gate  < input.json
    venv/bin/python -m components.ca_retirement prune < input.json      # the old CA in $PULUMI_COMMAND_STDOUT

stdin: {"kube": {"kubeconfig": …, "context": …, "cluster": …}, "newCaPem": "…", "oldCaPem": "…" | null}
(the stack's kubernetes:* settings: the kubeconfig path or contents; never printed).

gate   the ConfigMap's requestheader-client-ca-file holds the new CA (every kube-apiserver unions its
       --requestheader-client-ca-file into it, so stage trust reached at least one apiserver) and the new
       CA is at least 65 s old (metrics-server re-reads the ConfigMap on every change and once a minute).
       Prints the old CA's certificate on stdout: the prune reads it back.
prune  after every master trusts only the new CA: waits 65 s (every apiserver reloads its file), removes
       exactly the old CA (by DER) from requestheader-client-ca-file — kube-apiserver keeps a union and
       would keep it until 5 minutes after it expires — with a merge patch of that one key at the read
       resourceVersion, then reads again after 62 s (each apiserver re-syncs every minute) to prove that
       none put it back. Prints the old CA again (a re-run prunes the same CA).

Exit status 0 done, 1 refused or failed (one message on stderr saying what to do).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from components import kube_access

CONFIGMAP_PATH = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
KEY = "requestheader-client-ca-file"
STAGE_KEY = "metrics-aggregation:pki.caRotation"
RELOAD_SECONDS = 65
RECHECK_SECONDS = 62
CONFLICT_RETRIES = 5


class RotationError(Exception):
    """The stage must not go on; the message says what to do."""


@dataclass
class Cluster:
    """How the tool reads and patches the ConfigMap (tests give a fake)."""

    get: Callable[[str], dict[str, Any] | None]
    patch: Callable[[str, dict[str, Any]], dict[str, Any] | None]
    sleep: Callable[[float], None] = time.sleep
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)


def certificates(text: str | None) -> list[x509.Certificate]:
    if not text or "BEGIN CERTIFICATE" not in text:
        return []
    return x509.load_pem_x509_certificates(text.encode())


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def pem(certs: list[x509.Certificate]) -> str:
    """As Go's pem.Encode writes them (what kube-apiserver's controller writes): no cosmetic rewrite."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def describe(cert: x509.Certificate) -> str:
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return f"CN={cn[0].value if cn else '?'} (notBefore {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC)"


def _trusted(cluster: Cluster) -> tuple[list[x509.Certificate], str]:
    """The CAs in the ConfigMap's requestheader-client-ca-file, and the ConfigMap's resourceVersion."""
    cm = cluster.get(CONFIGMAP_PATH)
    if cm is None:
        raise RotationError(
            "kube-system/extension-apiserver-authentication does not exist: every kube-apiserver writes it at "
            "start; check that the kubeconfig reaches this cluster, then re-run `pulumi up`")
    data = cm.get("data") or {}
    try:
        certs = certificates(data.get(KEY))
    except ValueError:
        raise RotationError(f"{KEY} in kube-system/extension-apiserver-authentication is not readable PEM") from None
    return certs, (cm.get("metadata") or {}).get("resourceVersion", "")


def gate(cluster: Cluster, new: x509.Certificate, old: x509.Certificate) -> str:
    """Refuse (RotationError) unless metrics-server can trust a proxy cert signed by `new`; else the old
    CA's PEM, which the prune reads back."""
    certs, _ = _trusted(cluster)
    if der(new) not in {der(c) for c in certs}:
        raise RotationError(
            f"{STAGE_KEY}: sign refused, nothing changed: the new CA {describe(new)} is not in "
            f"kube-system/extension-apiserver-authentication ({KEY}) yet, so metrics-server would refuse a proxy "
            f"cert it signed. Stage trust must have run first: set {STAGE_KEY} to trust and run `pulumi up`; "
            "if it did, check that the masters' aggregator-ca.pem holds both CAs, wait a minute and re-run `pulumi up`")
    age = (cluster.now() - new.not_valid_before_utc).total_seconds()
    if age < RELOAD_SECONDS:
        raise RotationError(
            f"{STAGE_KEY}: sign refused, nothing changed: the new CA is only {int(age)} s old; metrics-server "
            f"re-reads the ConfigMap once a minute: wait {int(RELOAD_SECONDS - age) + 1} s and re-run `pulumi up`")
    print(f"gate passed: {describe(new)} is in {KEY} and {int(age)} s old", file=sys.stderr)
    return pem([old])


def prune(cluster: Cluster, new: x509.Certificate, old: list[x509.Certificate], *,
          settle: float = RELOAD_SECONDS, recheck: float = RECHECK_SECONDS) -> str:
    """Remove exactly the `old` CA(s) from the ConfigMap, then prove no apiserver puts one back."""
    if not old:
        print("nothing to prune: no retired CA was recorded (the stack never ran stage sign)", file=sys.stderr)
        return ""
    gone = {der(c) for c in old} - {der(new)}
    certs, _ = _trusted(cluster)
    if not gone & {der(c) for c in certs}:
        print(f"{KEY} holds no retired CA: nothing to prune", file=sys.stderr)
        return pem(old)
    # every master has just been given the new CA only: let each apiserver reload it first, or it puts the
    # old CA back at its next sync
    cluster.sleep(settle)
    for _ in range(CONFLICT_RETRIES):
        certs, version = _trusted(cluster)
        kept = [c for c in certs if der(c) not in gone]
        if len(kept) == len(certs):
            break
        if der(new) not in {der(c) for c in kept}:
            raise RotationError(
                f"{STAGE_KEY}: the prune refused to remove the old CA: {KEY} would not hold the new CA "
                f"{describe(new)}; run stage trust again ({STAGE_KEY}: trust) and re-run `pulumi up`")
        try:
            cluster.patch(CONFIGMAP_PATH, {"metadata": {"resourceVersion": version}, "data": {KEY: pem(kept)}})
        except kube_access.HttpError as exc:
            if exc.status == 409:  # an apiserver wrote it in between: read again
                continue
            raise
        print(f"removed {len(certs) - len(kept)} retired CA(s) from {KEY}", file=sys.stderr)
        break
    else:
        raise RotationError(f"{KEY} kept changing while it was pruned ({CONFLICT_RETRIES} conflicts): re-run `pulumi up`")
    cluster.sleep(recheck)
    certs, _ = _trusted(cluster)
    back = [c for c in certs if der(c) in gone]
    if back:
        raise RotationError(
            f"{STAGE_KEY}: a kube-apiserver put the old CA {describe(back[0])} back into {KEY}: a master still "
            "trusts it (its aggregator-ca.pem was not rewritten, or its file watch missed the write). Check every "
            "master's aggregator-ca.pem (`make audit`), fix it, then re-run `pulumi up` (the prune runs again)")
    print(f"{KEY} still without the retired CA after {int(recheck)} s", file=sys.stderr)
    return pem(old)


def _cluster(kube: dict[str, Any]) -> Cluster:
    ep = kube_access.endpoint(kube.get("kubeconfig"), kube.get("context"), kube.get("cluster"))
    return Cluster(
        get=lambda path: kube_access.get_json(ep, path),
        patch=lambda path, body: kube_access.request_json(ep, "PATCH", path, body,
                                                          content_type="application/merge-patch+json"),
    )


def main(argv: list[str] | None = None, stdin: Any = None, env: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="components.ca_retirement", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("gate", "prune"))
    args = parser.parse_args(argv)
    env = os.environ if env is None else env
    try:
        given = json.load(stdin or sys.stdin)
        new = certificates(given.get("newCaPem"))
        if len(new) != 1:
            raise RotationError("stdin must give newCaPem: one certificate")
        cluster = _cluster(given.get("kube") or {})
        if args.action == "gate":
            old = certificates(given.get("oldCaPem"))
            if len(old) != 1:
                raise RotationError("stdin must give oldCaPem: one certificate")
            out = gate(cluster, new[0], old[0])
        else:
            # the gate's stdout, which pulumi-command passes to the next run of the step
            out = prune(cluster, new[0], certificates(env.get("PULUMI_COMMAND_STDOUT")))
    except (RotationError, kube_access.KubeAccessError, OSError, ValueError) as exc:
        print(f"CA rotation: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
