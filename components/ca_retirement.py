"""The cluster side of a CA rotation (docs/ca-rotation.md), on kube-system/extension-apiserver-authentication:
the gate before a proxy cert signed by the new CA goes out, and the prune of the CAs the masters stopped
trusting. The program runs both during `up` (components/ca_rotation.py); by hand (pki.existingCa, a CA left
behind by a backed-out rotation), with the kubeconfig of the cluster:

    venv/bin/python -m components.ca_retirement gate  --new-ca new-ca.pem [--kubeconfig F] [--context C]
    venv/bin/python -m components.ca_retirement prune --new-ca new-ca.pem --old-ca old-ca.pem [...]

gate   the ConfigMap's requestheader-client-ca-file holds the new CA (every kube-apiserver unions its
       --requestheader-client-ca-file into it, so the masters' bundle reached the ConfigMap) and the new CA
       is at least 65 s old (metrics-server re-reads the ConfigMap on every change and once a minute).
prune  after every master trusts only the new CA: waits 65 s (every apiserver reloads its file, or a slow
       one puts the old CA back at its next sync), removes exactly the old CA(s) — by the sha256 of their
       DER, and only a self-signed CA whose CN is one the caller names as its own (a master's file may have
       held a hand-made CA another apiserver still trusts: never ours to remove) — from requestheader-client-ca-file with a merge patch of that one key at the resourceVersion
       it read (kube-apiserver keeps a union and would keep the old CA until 5 minutes after it expires),
       then reads again after 62 s (each apiserver re-syncs every minute) to prove none put it back.

A refusal is a RotationError whose message names pki.caRotation and what to do; nothing quotes the kubeconfig.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
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


def sha256(cert: x509.Certificate) -> str:
    """The sha256 of the DER, as install-certs prints it for a CA a master stopped trusting."""
    return hashlib.sha256(der(cert)).hexdigest()


def pem(certs: list[x509.Certificate]) -> str:
    """As Go's pem.Encode writes them (what kube-apiserver's controller writes): no cosmetic rewrite."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)


def common_name(cert: x509.Certificate) -> str | None:
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else None


def describe(cert: x509.Certificate) -> str:
    return f"CN={common_name(cert) or '?'} (notBefore {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC)"


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


def gate(cluster: Cluster, new: x509.Certificate) -> None:
    """Refuse (RotationError) unless metrics-server can trust a proxy cert signed by `new`."""
    certs, _ = _trusted(cluster)
    if der(new) not in {der(c) for c in certs}:
        raise RotationError(
            f"{STAGE_KEY}: refused before the proxy cert is signed by the new CA, nothing changed: the new CA "
            f"{describe(new)} is not in kube-system/extension-apiserver-authentication ({KEY}), so metrics-server "
            f"would refuse that proxy cert. Stage trust must run first: set {STAGE_KEY} to trust and run `pulumi up`; "
            "if it did, check that every master's aggregator-ca.pem holds both CAs, wait a minute and re-run `pulumi up`")
    age = (cluster.now() - new.not_valid_before_utc).total_seconds()
    if age < RELOAD_SECONDS:
        raise RotationError(
            f"{STAGE_KEY}: refused before the proxy cert is signed by the new CA, nothing changed: the new CA is only "
            f"{int(age)} s old, and metrics-server re-reads the ConfigMap once a minute: wait "
            f"{int(RELOAD_SECONDS - age) + 1} s and re-run `pulumi up`")


def prune(cluster: Cluster, new: x509.Certificate, gone: list[str], *, names: Collection[str],
          settle: float = RELOAD_SECONDS, recheck: float = RECHECK_SECONDS) -> list[str]:
    """Remove exactly the CAs whose DER has a sha256 in `gone` from the ConfigMap (never `new`), then prove no
    apiserver puts one back. Returns the sha256 of the CAs removed.

    Only a CA of the caller's own is removed: self-signed with a CN in `names`. A master's file can have held
    a CA made by hand (taken over when the master joined): removing it while another apiserver trusts it
    would fail the prune and refuse front-proxy clients meanwhile, so such a CA stays."""
    retired = {g for g in gone if g != sha256(new)}

    def retires(cert: x509.Certificate) -> bool:
        return sha256(cert) in retired and cert.issuer == cert.subject and common_name(cert) in names

    certs, _ = _trusted(cluster)
    if not any(map(retires, certs)):
        return []
    # every master has just been given the new CA only: let each apiserver reload it first, or it puts the
    # old CA back at its next sync
    cluster.sleep(settle)
    removed: list[str] = []
    for _ in range(CONFLICT_RETRIES):
        certs, version = _trusted(cluster)
        kept = [c for c in certs if not retires(c)]
        if len(kept) == len(certs):
            break
        if der(new) not in {der(c) for c in kept}:
            raise RotationError(
                f"{STAGE_KEY}: the old CA was not removed from {KEY}: the ConfigMap does not hold the new CA "
                f"{describe(new)}; set {STAGE_KEY} to trust, run `pulumi up`, then finish the rotation again")
        try:
            cluster.patch(CONFIGMAP_PATH, {"metadata": {"resourceVersion": version}, "data": {KEY: pem(kept)}})
        except kube_access.HttpError as exc:
            if exc.status == 409:  # an apiserver wrote it in between: read again
                continue
            raise
        removed = [sha256(c) for c in certs if c not in kept]
        break
    else:
        raise RotationError(f"{KEY} kept changing while it was pruned ({CONFLICT_RETRIES} conflicts): re-run `pulumi up`")
    cluster.sleep(recheck)
    certs, _ = _trusted(cluster)
    back = [c for c in certs if retires(c)]
    if back:
        raise RotationError(
            f"{STAGE_KEY}: a kube-apiserver put the old CA {describe(back[0])} back into {KEY}: a master still "
            "trusts it (its aggregator-ca.pem was not rewritten, or its file watch missed the write). Check every "
            "master's aggregator-ca.pem, fix it, then re-run `pulumi up` (the prune runs again)")
    return removed


def cluster_of(kube: dict[str, Any]) -> Cluster:
    """The ConfigMap through the kubeconfig the stack's kubernetes provider uses (kube_access)."""
    ep = kube_access.endpoint(kube.get("kubeconfig"), kube.get("context"), kube.get("cluster"))
    return Cluster(
        get=lambda path: kube_access.get_json(ep, path),
        patch=lambda path, body: kube_access.request_json(ep, "PATCH", path, body,
                                                          content_type="application/merge-patch+json"),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="components.ca_retirement", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("action", choices=("gate", "prune"))
    parser.add_argument("--new-ca", required=True, type=Path, help="the CA certificate that stays (PEM)")
    parser.add_argument("--old-ca", type=Path, help="prune: the CA certificate(s) to remove (PEM)")
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, then ~/.kube/config")
    parser.add_argument("--context")
    args = parser.parse_args(argv)
    try:
        given = certificates(args.new_ca.read_text())
        if len(given) != 1:
            raise RotationError(f"--new-ca {args.new_ca}: exactly one certificate expected (the CA that stays), "
                                f"it holds {len(given)}; write that CA's PEM alone to a file")
        [new] = given
        cluster = cluster_of({"kubeconfig": args.kubeconfig, "context": args.context})
        if args.action == "gate":
            gate(cluster, new)
            print(f"gate passed: {describe(new)} is in {KEY} and old enough")
        else:
            old = certificates(args.old_ca.read_text()) if args.old_ca else []
            if not old:
                raise RotationError("prune needs --old-ca: the CA certificate(s) to remove")
            # the CAs named on the command line are the ones to remove: their CNs are the caller's own
            removed = prune(cluster, new, [sha256(c) for c in old],
                            names={n for n in map(common_name, old) if n is not None})
            print(f"removed {len(removed)} CA(s) from {KEY}; still absent after {RECHECK_SECONDS} s")
    except (RotationError, kube_access.KubeAccessError, OSError, ValueError) as exc:
        print(f"CA rotation: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
