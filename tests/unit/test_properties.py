"""Property test: for any valid master list (IPv4, IPv6, DNS names), the program's invariants hold."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.program import run
from tests.unit.hostkeys import host_key

label = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
dns_name = st.lists(label, min_size=2, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
address = st.one_of(ipv4, ipv6, dns_name)


def canonical(a: str) -> str:
    try:
        return str(ipaddress.ip_address(a))
    except ValueError:
        return a.lower()


master_lists = st.lists(address, min_size=1, max_size=6, unique_by=canonical).map(
    lambda addrs: [{"name": f"cp-{i}", "address": a, "hostKey": host_key(i)} for i, a in enumerate(addrs)]
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(masters=master_lists, hosts=st.lists(address, max_size=4))
def test_invariants(stack_config, masters, hosts):
    result = run(stack_config(masters=masters, pki={"hosts": hosts}))
    leaf = x509.load_pem_x509_certificate(result.outputs["proxyClientCertPem"].encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    sans = {str(i) for i in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    # 1. every master address and extra host is a SAN, IPs as IP SANs, names as DNS SANs
    assert {canonical(a) for a in [m["address"] for m in masters] + hosts} == sans
    # 2. two steps per master, unique names, flags chained in list order
    commands = result.commands
    assert [c["name"] for c in commands] == [f"{m['name']}-{s}" for m in masters for s in ("certs", "flags")]
    previous = None
    for m in masters:
        flags = next(c for c in commands if c["name"] == f"{m['name']}-flags")
        own = {f"{m['name']}-certs"}
        assert flags["depends_on"] == sorted(own | ({previous} if previous else set()))
        assert flags["connection"]["host"] == m["address"]
        previous = flags["name"]
    # 3. the outputs list the masters in order
    assert result.outputs["masters"] == [{"name": m["name"], "address": m["address"]} for m in masters]
