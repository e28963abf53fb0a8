"""components/ca_retirement.py against a fake kube-system/extension-apiserver-authentication: the gate refuses
until the ConfigMap holds the new CA and it is old enough; the prune removes exactly the old CA (the sha256 of
its DER, as install-certs names it), keeps every other key and CA, patches at the read resourceVersion
(retrying a conflict), and fails when an apiserver puts the old CA back."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from components import ca_retirement as tool
from components import kube_access
from tests.unit.test_existing_ca import make_ca

NOW = dt.datetime.now(dt.UTC)
OLD = make_ca(cn="aggregator-ca", not_before=NOW - dt.timedelta(days=300))
NEW = make_ca(cn="aggregator-ca-gen2", not_before=NOW - dt.timedelta(seconds=120))
KUBEADM = make_ca(cn="front-proxy-ca")  # someone else's CA in the union: never ours to remove


class FakeCluster:
    """The ConfigMap as the apiservers keep it; `readd` simulates an apiserver that still trusts the old CA."""

    def __init__(self, cas, *, conflicts: int = 0, readd: bool = False, now=NOW):
        self.data = {
            "client-ca-file": KUBEADM.cert_pem,
            tool.KEY: "".join(c.cert_pem for c in cas),
            "requestheader-allowed-names": '["aggregator"]',
        }
        self.version = 7
        self.conflicts, self.readd = conflicts, readd
        self.patches: list[dict] = []
        self.slept: list[float] = []
        self.cluster = tool.Cluster(get=self.get, patch=self.patch, sleep=self.sleep, now=lambda: now)

    def get(self, path):
        assert path == tool.CONFIGMAP_PATH
        return {"metadata": {"resourceVersion": str(self.version)}, "data": dict(self.data)}

    def patch(self, path, body):
        self.patches.append(body)
        if self.conflicts:
            self.conflicts -= 1
            self.version += 1
            raise kube_access.HttpError(409, "the object has been modified")
        assert body["metadata"]["resourceVersion"] == str(self.version)
        self.data.update(body["data"])
        self.version += 1
        return {}

    def sleep(self, seconds):
        self.slept.append(seconds)
        if self.readd and len(self.slept) == 2:  # an apiserver's next sync, within the recheck
            self.data[tool.KEY] += OLD.cert_pem

    def cas(self):
        return [c.subject.rfc4514_string() for c in tool.certificates(self.data[tool.KEY])]


GONE = [tool.sha256(OLD.cert)]
OURS = {"aggregator-ca", "aggregator-ca-gen2"}  # the CNs of the program's CA generations


def test_gate_passes_when_the_new_ca_is_trusted_and_old_enough():
    fake = FakeCluster([OLD, NEW])
    tool.gate(fake.cluster, NEW.cert)
    assert fake.patches == []


def test_gate_refuses_before_the_new_ca_is_in_the_configmap():
    fake = FakeCluster([OLD])
    with pytest.raises(tool.RotationError) as err:
        tool.gate(fake.cluster, NEW.cert)
    assert "pki.caRotation" in str(err.value) and "trust" in str(err.value) and "re-run" in str(err.value)


def test_gate_refuses_a_new_ca_younger_than_metrics_server_s_reload():
    fake = FakeCluster([OLD, NEW], now=NEW.cert.not_valid_before_utc + dt.timedelta(seconds=20))
    with pytest.raises(tool.RotationError) as err:
        tool.gate(fake.cluster, NEW.cert)
    assert "wait 46 s" in str(err.value) and "pki.caRotation" in str(err.value)


def test_prune_removes_exactly_the_old_ca_and_keeps_other_keys_and_cas():
    fake = FakeCluster([KUBEADM, OLD, NEW])
    before = dict(fake.data)
    assert tool.prune(fake.cluster, NEW.cert, GONE, names=OURS, settle=65, recheck=62) == GONE
    assert fake.cas() == [KUBEADM.cert.subject.rfc4514_string(), NEW.cert.subject.rfc4514_string()]
    assert fake.slept == [65, 62]
    [patch] = fake.patches
    assert set(patch["data"]) == {tool.KEY}  # a merge patch of the one key: the others are not ours
    assert {k: v for k, v in fake.data.items() if k != tool.KEY} == {k: v for k, v in before.items() if k != tool.KEY}


def test_prune_retries_a_conflict_at_the_new_resource_version():
    fake = FakeCluster([OLD, NEW], conflicts=2)
    tool.prune(fake.cluster, NEW.cert, GONE, names=OURS, settle=0, recheck=0)
    assert len(fake.patches) == 3 and fake.cas() == [NEW.cert.subject.rfc4514_string()]


def test_prune_fails_when_an_apiserver_puts_the_old_ca_back():
    fake = FakeCluster([OLD, NEW], readd=True)
    with pytest.raises(tool.RotationError) as err:
        tool.prune(fake.cluster, NEW.cert, GONE, names=OURS, settle=0, recheck=0)
    assert "put the old CA" in str(err.value) and "aggregator-ca.pem" in str(err.value)


def test_prune_is_a_no_op_once_the_old_ca_is_gone_and_never_removes_the_new_one():
    fake = FakeCluster([NEW])
    assert tool.prune(fake.cluster, NEW.cert, GONE, names=OURS) == []
    assert tool.prune(fake.cluster, NEW.cert, [tool.sha256(NEW.cert)], names=OURS) == []
    assert fake.patches == [] and fake.slept == []


def test_prune_keeps_a_ca_the_program_never_made_even_when_a_master_stopped_trusting_it():
    """A master added later held a hand-made CA in its aggregator-ca.pem: install-certs names it too, but
    another apiserver may still trust it, so it stays; the program's own old CA goes."""
    hand_made = make_ca(cn="front-proxy-ca-by-hand")
    fake = FakeCluster([hand_made, OLD, NEW])
    gone = [tool.sha256(hand_made.cert), *GONE]
    assert tool.prune(fake.cluster, NEW.cert, gone, names=OURS, settle=0, recheck=0) == GONE
    assert fake.cas() == [hand_made.cert.subject.rfc4514_string(), NEW.cert.subject.rfc4514_string()]
    # only the foreign CA named: nothing to do, no wait, no patch
    fake = FakeCluster([hand_made, NEW])
    assert tool.prune(fake.cluster, NEW.cert, [tool.sha256(hand_made.cert)], names=OURS) == []
    assert fake.patches == [] and fake.slept == []


def test_prune_keeps_a_ca_with_one_of_the_program_s_cns_that_is_not_self_signed():
    leaf = make_ca(cn="aggregator-ca")  # the program's CN, but issued by another CA: not one the program made
    issuer = make_ca(cn="someone-else")
    forged = x509.CertificateBuilder().subject_name(leaf.cert.subject).issuer_name(issuer.cert.subject) \
        .public_key(leaf.cert.public_key()).serial_number(x509.random_serial_number()) \
        .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30)) \
        .sign(serialization.load_pem_private_key(issuer.key_pem.encode(), None), hashes.SHA256())
    fake = FakeCluster([NEW])
    fake.data[tool.KEY] = forged.public_bytes(serialization.Encoding.PEM).decode() + NEW.cert_pem
    assert tool.prune(fake.cluster, NEW.cert, [tool.sha256(forged)], names=OURS) == []
    assert fake.patches == []


def test_the_sha256_is_the_one_of_the_der_as_the_host_script_prints_it():
    import base64
    import hashlib

    body = "".join(OLD.cert_pem.strip().splitlines()[1:-1])
    assert tool.sha256(OLD.cert) == hashlib.sha256(base64.b64decode(body)).hexdigest()


def test_prune_never_leaves_the_configmap_without_the_new_ca():
    fake = FakeCluster([OLD])
    with pytest.raises(tool.RotationError) as err:
        tool.prune(fake.cluster, NEW.cert, GONE, names=OURS, settle=0, recheck=0)
    assert "trust" in str(err.value)
    assert fake.patches == []


def test_the_command_line_prunes_a_given_old_ca(monkeypatch, tmp_path, capsys):
    """By hand (pki.existingCa, a backed-out rotation): the same prune, the CAs from files."""
    fake = FakeCluster([OLD, NEW])
    monkeypatch.setattr(tool, "cluster_of", lambda kube: fake.cluster)
    (tmp_path / "new.pem").write_text(NEW.cert_pem)
    (tmp_path / "old.pem").write_text(OLD.cert_pem)
    assert tool.main(["prune", "--new-ca", str(tmp_path / "new.pem"), "--old-ca", str(tmp_path / "old.pem")]) == 0
    assert fake.cas() == [NEW.cert.subject.rfc4514_string()]
    assert tool.main(["prune", "--new-ca", str(tmp_path / "new.pem")]) == 1
    assert "--old-ca" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["gate", "prune"])
def test_the_command_line_wants_exactly_one_new_ca(monkeypatch, tmp_path, capsys, action):
    fake = FakeCluster([OLD, NEW])
    monkeypatch.setattr(tool, "cluster_of", lambda kube: fake.cluster)
    (tmp_path / "both.pem").write_text(OLD.cert_pem + NEW.cert_pem)
    (tmp_path / "old.pem").write_text(OLD.cert_pem)
    assert tool.main([action, "--new-ca", str(tmp_path / "both.pem"), "--old-ca", str(tmp_path / "old.pem")]) == 1
    err = capsys.readouterr().err
    assert "exactly one certificate expected" in err and "holds 2" in err
    assert fake.patches == []
