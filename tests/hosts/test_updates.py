"""Host tier: a changed stack config re-runs the program's `update` commands and converges.

`pulumi up` after a config change runs each changed remote.Command's `update` (never `triggers`, never a
replace), so the host script must move a configured host from the old flag set to the new one: a flag
the stack no longer sets goes back to its original value, a new value replaces ours, and `destroy` with
the newest commands still restores the original bytes.
"""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.hosts.test_rollout import assert_flags_once

pytestmark = [pytest.mark.hosts, pytest.mark.timeout(240)]


def values(host, flag: str) -> list[str]:
    return [a.partition("=")[2] for a in host.config_args() if a.partition("=")[0] == flag]


def test_flag_set_change_converges_and_destroy_still_restores(lab, make_stack):
    h = lab.add_host("m1", "env-file", sample="kube-apiserver-preexisting.conf")
    original = h.config_bytes()
    assert values(h, "--enable-aggregator-routing") == ["false"]

    first = make_stack([h])
    assert first.runner.up(first.commands()).ok

    # The stack stops setting --enable-aggregator-routing and renames the proxy-client CN.
    second = make_stack([h], apiserver={"enableAggregatorRouting": False},
                        pki={"proxyClientCommonName": "front-proxy-aggregator"})
    commands = second.commands()
    out = second.runner.up(commands, update=True)
    assert out.ok, out.explain()
    flags = second.flags_for(h)
    assert "--enable-aggregator-routing" not in flags
    assert_flags_once(h, flags)
    assert values(h, "--enable-aggregator-routing") == ["false"], "the original value must come back"
    assert values(h, "--requestheader-allowed-names") == ["front-proxy-aggregator"]
    running = h.running_flags()
    assert running["--requestheader-allowed-names"] == "front-proxy-aggregator"
    assert running["--enable-aggregator-routing"] == "false"
    # the certificate on the host is the new one, with the CN now allowed
    cert = x509.load_pem_x509_certificate(h.path("/etc/kubernetes/ssl/aggregator.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "front-proxy-aggregator"

    out = second.runner.destroy(commands)
    assert out.ok, out.explain()
    assert h.config_bytes() == original


def test_new_certificate_rewrites_files_without_a_restart(lab, make_stack):
    """A renewed proxy cert from the same CA is reloaded by kube-apiserver (1.19+): no restart."""
    h = lab.add_host("m1", "env-file")
    first = make_stack([h])
    assert first.runner.up(first.commands()).ok
    restarts = h.restarts()
    old = h.path("/etc/kubernetes/ssl/aggregator.pem").read_bytes()

    # A different SAN list gives a new certificate (same CA, same flags).
    second = make_stack([h], pki={"hosts": ["127.0.0.1", "kubernetes", "kubernetes.default", "api.example.internal"]})
    out = second.runner.up(second.commands(), update=True)
    assert out.ok, out.explain()
    assert h.path("/etc/kubernetes/ssl/aggregator.pem").read_bytes() != old
    assert "no restart" in out["m1-flags"].stdout
    assert h.restarts() == restarts, "a certificate renewal restarted the apiserver"


def test_renamed_master_keeps_its_host_configured(lab, rename_master):
    """Renaming a master makes new resources: Pulumi runs the new name's creates first and the old name's
    deletes last. Those deletes must not revert the flags, remove the certificates or the host script
    that the new name now manages; destroying the new name still restores the original bytes."""
    h = lab.add_host("m1", "env-file")
    original = h.config_bytes()
    old, renamed, new_commands, up, out = rename_master(h)  # out: the old name's deletes, run last by the engine
    assert "no restart" in up["cp-renamed-flags"].stdout
    assert "master resource 'cp-renamed' manages it now" in out["m1-flags"].stdout
    assert "manages them now" in out["m1-certs"].stdout
    assert "kept the host scripts" in out["m1-certs"].stdout
    assert_flags_once(h, old.flags_for(h))  # the same flags: only the name changed
    assert h.path("/etc/kubernetes/ssl/aggregator-key.pem").exists()

    out = renamed.runner.destroy(new_commands)
    assert out.ok, out.explain()
    assert h.config_bytes() == original
    assert not h.path("/etc/kubernetes/ssl/aggregator-key.pem").exists()
    assert not h.path("/var/lib/metrics-aggregation/scripts").exists()
