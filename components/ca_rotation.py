"""pki.caGeneration / pki.caRotation: a rotation of the aggregator CA with an overlap, one stage per `up`.

    stage (config)                 CAs in the program         signs the proxy cert   masters trust   checks
    generation N (no caRotation)   N                          N                      N               N ≥ 2: gate, prune
    N+1, caRotation: trust         N, N+1                     N                      N, N+1          -
    N+1, caRotation: sign          N (unprotected), N+1       N+1                    N, N+1          gate
    N+1 (caRotation removed)       N+1 (N is deleted)         N+1                    N+1             gate, prune

Only the certs steps see a change (their stdin; `--ca-certs 2` while the masters trust two CAs): kube-apiserver
reloads --requestheader-client-ca-file and the proxy-client pair from disk, so no flags step re-runs and
nothing restarts. Generation 1 keeps the names the program always had ("aggregator-ca"); generation N ≥ 2
is "aggregator-ca-genN", with the CN `<pki.caCommonName>-genN` (the CN and dates are what logs and the
ConfigMap show of a CA: distinct per generation).

Who checks what (docs/ca-rotation.md): metrics-server trusts the proxy cert through the ConfigMap
kube-system/extension-apiserver-authentication, which every kube-apiserver fills with the union of what it
and the ConfigMap hold. So before a proxy cert signed by the new CA can go out (stage sign, and the rotation
done) the gate (components/ca_retirement.py) checks that the ConfigMap holds the new CA and that
metrics-server had time to reload it; and once the masters trust only the new CA, the prune removes from the
ConfigMap exactly the CAs the masters just stopped trusting (the certs steps name them, by the sha256 of
their DER) that are the program's own generations (never a hand-made CA a master's file held), since kube-apiserver's union would keep them until they expire, and checks after more than a
minute that no apiserver put one back.

Both run in this process during `up` only (a preview changes nothing and reads nothing), with the stack's
kubeconfig: the gate before the proxy cert is (re-)signed, so a refusal touches nothing; the prune after
every master. `CaRetirement` holds their results as its outputs, so the program waits for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from components import ca_retirement, kube_access
from components.config import CaRotation, Settings
from components.kube_access import KubeSettings
from components.pki import AggregatorCA, Issued

RETIREMENT_TYPE = "metrics-aggregation:pki:CaRetirement"
# what install-certs prints for each CA the master's aggregator-ca.pem no longer holds
UNTRUSTED = re.compile(r"no longer trusts the CA sha256:([0-9a-f]{64})")


def ca_name(generation: int) -> str:
    """The logical name of a generation's AggregatorCA: generation 1 keeps the name it always had."""
    return "aggregator-ca" if generation == 1 else f"aggregator-ca-gen{generation}"


def ca_common_name(settings: Settings, generation: int) -> str:
    cn = settings.pki.ca_common_name
    return cn if generation == 1 else f"{cn}-gen{generation}"


@dataclass(frozen=True)
class Stage:
    """What the stack's pki.caGeneration / pki.caRotation ask of this `up`."""

    generation: int
    rotation: CaRotation | None

    @classmethod
    def of(cls, settings: Settings) -> Stage:
        return cls(settings.pki.ca_generation, settings.pki.ca_rotation)

    @property
    def generations(self) -> tuple[int, ...]:
        """The CA generations in the program, oldest first; also what the masters trust, in that order."""
        return (self.generation - 1, self.generation) if self.rotation else (self.generation,)

    @property
    def signer(self) -> int:
        return self.generation - 1 if self.rotation is CaRotation.TRUST else self.generation

    def protected(self, generation: int) -> bool:
        """Whether pki.protectCa applies to `generation`: the old CA loses it in stage sign, before the
        stage that deletes it."""
        return not (self.rotation is CaRotation.SIGN and generation == self.generation - 1)

    @property
    def gated(self) -> bool:
        """Whether the proxy cert may be signed only after the gate: whenever the newest CA signs it and
        there was an older one (stage sign, and every `up` after it: a skipped stage sign is caught too)."""
        return self.generation >= 2 and self.rotation is not CaRotation.TRUST

    @property
    def prunes(self) -> bool:
        """Whether the CAs the masters stopped trusting are pruned from the ConfigMap (the rotation done)."""
        return self.generation >= 2 and self.rotation is None


def settings_for(settings: Settings, generation: int, *, protect: bool) -> Settings:
    """`settings` as the aggregator-ca row reads them for `generation`: its CN, and `protect` only when
    pki.protectCa asks for it and the stage allows it."""
    pki = settings.pki.model_copy(update={
        "ca_common_name": ca_common_name(settings, generation),
        "protect_ca": settings.pki.protect_ca and protect,
    })
    return settings.model_copy(update={"pki": pki})


def trust_bundle(pems: list[str]) -> str:
    """What the masters get as aggregator-ca.pem: each CA's PEM, oldest first, each ending in a newline."""
    return "".join(p if p.endswith("\n") else p + "\n" for p in pems)


def untrusted(outputs: Sequence[str]) -> list[str]:
    """The sha256 (of the DER) of every CA the certs steps' outputs say a master stopped trusting."""
    found: list[str] = []
    for text in outputs:
        found += [m for m in UNTRUSTED.findall(text or "") if m not in found]
    return found


def generation_names(settings: Settings, generation: int) -> frozenset[str]:
    """The CNs this program gives its CAs up to generation+1 (a backed-out rotation's new CA is one): the only
    CAs the prune may remove, never a hand-made CA a master's file held before the program took it over."""
    return frozenset(ca_common_name(settings, g) for g in range(1, generation + 2))


class Cas:
    """The stage's aggregator CAs (AggregatorCA components, one per generation), which of them signs, what
    the masters trust, and the retirement checks. Not a resource itself: each CA stays a top-level
    component, so generation 1 keeps its URNs."""

    def __init__(self, settings: Settings, kube: KubeSettings | None):
        self.stage = stage = Stage.of(settings)
        # the checks read the cluster with the stack's kubernetes:* config, like metrics-server
        self._kube = kube if kube is not None or not stage.gated else kube_access.read_settings()
        self.by_generation = {
            g: AggregatorCA(ca_name(g), settings_for(settings, g, protect=stage.protected(g)))
            for g in stage.generations
        }
        cas = [self.by_generation[g] for g in stage.generations]
        # aggregatorCaCertPem: what the masters trust (both CAs during a rotation); the newest CA's notAfter
        self.cert_pem: pulumi.Output[str] = (
            cas[0].cert_pem if len(cas) == 1 else pulumi.Output.all(*[c.cert_pem for c in cas]).apply(trust_bundle))
        self.not_after = cas[-1].not_after
        self.retirement: CaRetirement | None = None
        signer = self.by_generation[stage.signer].issued
        if stage.gated:
            self.retirement = CaRetirement(f"{ca_name(stage.generation)}-retirement", self._kube or KubeSettings(),
                                           new=signer.cert_pem, names=generation_names(settings, stage.generation))
            # the proxy cert is signed with the CA certificate the gate let through: it waits for the gate
            signer = dataclasses.replace(signer, cert_pem=self.retirement.gate)
        self.signer: Issued = signer

    def finish(self, certs_steps: Sequence[Any], done: Sequence[Any]) -> None:
        """After every master (the certs steps, then `done`, the last flags step): the rotation done, prune
        the ConfigMap of what the masters stopped trusting."""
        if self.retirement is None:
            return
        if self.stage.prunes:
            self.retirement.prune_after([s.stdout for s in certs_steps], [s.stdout for s in done])
        self.retirement.finish()


class CaRetirement(pulumi.ComponentResource):
    """The gate before a proxy cert signed by the new CA goes out, and the prune of the CAs the masters
    stopped trusting (see the module's docstring): checks of the cluster run in this process during `up`."""

    gate: pulumi.Output[str]  # the new CA's certificate, once the gate passed
    pruned: pulumi.Output[list[str]]

    def __init__(self, name: str, kube: KubeSettings, *, new: pulumi.Input[str], names: frozenset[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(RETIREMENT_TYPE, name, None, opts)
        self._kube = kube
        self._names = names
        self.gate = pulumi.Output.from_input(new).apply(self._gate)
        self.pruned = pulumi.Output.from_input([])

    def prune_after(self, certs_stdout: list[pulumi.Output[str]], after: list[pulumi.Output[str]]) -> None:
        self.pruned = pulumi.Output.all(self.gate, *after, *certs_stdout).apply(
            lambda v: self._prune(v[0], untrusted(v[1 + len(after):])))

    def finish(self) -> None:
        # as outputs, the checks are waited for: the program ends only after them
        self.register_outputs({"gate": self.gate.apply(lambda _: "passed"), "pruned": self.pruned})

    async def _gate(self, new_pem: str) -> str:
        if pulumi.runtime.is_dry_run():
            return new_pem  # a preview reads nothing; `up` checks before anything is signed
        await self._checked(ca_retirement.gate, new_pem)
        return new_pem

    async def _prune(self, new_pem: str, gone: list[str]) -> list[str]:
        if pulumi.runtime.is_dry_run() or not gone:
            return []
        return await self._checked(ca_retirement.prune, new_pem, gone, names=self._names)

    async def _checked(self, check: Any, new_pem: str, *args: Any, **kwargs: Any) -> Any:
        """Run a blocking check (HTTP, waits of a minute) off the event loop; its refusal stops `up` with its
        own message."""
        try:
            cluster = ca_retirement.cluster_of({k: self._kube.get(k) for k in ("kubeconfig", "context", "cluster")})
        except kube_access.KubeAccessError as exc:
            # metricsServer.manage: false needs no kubeconfig otherwise: say why this `up` does
            raise pulumi.RunError(
                f"CA rotation: {exc}. With pki.caGeneration 2 or more every `up` reads "
                "kube-system/extension-apiserver-authentication (the rotation's gate and prune), even with "
                "metricsServer.manage: false: set kubernetes:kubeconfig (and kubernetes:context) to the "
                "cluster's kubeconfig") from None
        try:
            return await asyncio.to_thread(check, cluster, ca_retirement.certificates(new_pem)[0], *args, **kwargs)
        except (ca_retirement.RotationError, kube_access.KubeAccessError, OSError, ValueError) as exc:
            raise pulumi.RunError(f"CA rotation: {exc}") from None
