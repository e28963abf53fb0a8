"""pki.caGeneration / pki.caRotation: a rotation of the aggregator CA with an overlap, one stage per `up`.

    stage (config)                 CAs in the program         signs the proxy cert   masters trust   extra step
    generation N (no caRotation)   N                          N                      N               N ≥ 2: prune
    N+1, caRotation: trust         N, N+1                     N                      N, N+1          -
    N+1, caRotation: sign          N (unprotected), N+1       N+1                    N, N+1          gate
    N+1 (caRotation removed)       N+1 (N is deleted)         N+1                    N+1             prune

Only the certs steps see a change (their stdin; `--ca-certs 2` while the masters trust two CAs): kube-apiserver
reloads --requestheader-client-ca-file and the proxy-client pair from disk, so no flags step re-runs and
nothing restarts. Generation 1 keeps the names the program always had ("aggregator-ca"); generation N ≥ 2
is "aggregator-ca-genN", with the CN `<pki.caCommonName>-genN` (the CN and dates are what logs and the
ConfigMap show of a CA: distinct per generation).

Who checks what (docs/ca-rotation.md): metrics-server trusts the proxy cert through the ConfigMap
kube-system/extension-apiserver-authentication, which every kube-apiserver fills with the union of what it
and the ConfigMap hold. So before the proxy cert is re-signed the `gate` (components/ca_retirement.py) checks that
the ConfigMap holds the new CA and that metrics-server had time to reload it; and after the masters trust
only the new CA, the `prune` removes exactly the old CA from the ConfigMap (the union would keep it until it
expired) and checks after more than a minute that no apiserver put it back.

Both run as one local command, `<old CA name>-retirement`, during `up` only (a preview runs no command): its
create (stage sign) is the gate, which prints the old CA's certificate; its update (the rotation done) is
the prune, which reads that certificate back from its previous stdout (pulumi-command passes it as
$PULUMI_COMMAND_STDOUT) — the old CA has left the program by then, and the ConfigMap must lose exactly it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command

from components import kube_access
from components.config import CaRotation, Settings
from components.kube_access import KubeSettings
from components.pki import AggregatorCA

PROJECT_DIR = Path(__file__).resolve().parent.parent
RETIREMENT_TYPE = "metrics-aggregation:pki:CaRetirement"
# metrics-server re-reads the ConfigMap on every change and every minute; 5 s for a master whose watch
# was being re-established (docs/ca-rotation.md).
RELOAD_SECONDS = 65
# after the prune: longer than the minute in which every apiserver re-syncs the ConfigMap
RECHECK_SECONDS = 62


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
    def retirement(self) -> str | None:
        """'gate' (stage sign), 'prune' (generation ≥ 2, done), or None: the retirement step's action."""
        if self.rotation is CaRotation.SIGN:
            return "gate"
        if self.rotation is None and self.generation >= 2:
            return "prune"
        return None

    @property
    def retiring(self) -> int:
        return self.generation - 1


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


def tool_command(action: str) -> str:
    """The retirement step's command line: the tool, run with this program's interpreter (it needs the
    program's packages) from the project directory."""
    return f"{sys.executable} -m components.ca_retirement {action}"


class CaRetirement(pulumi.ComponentResource):
    """The gate before the proxy cert is re-signed and the prune after the masters dropped the old CA (see
    the module's docstring): one local command, run during `up` only, with the stack's kubeconfig on stdin."""

    step: command.local.Command

    def __init__(self, name: str, action: str, kube: KubeSettings, *, new_ca_pem: pulumi.Input[str],
                 old_ca_pem: pulumi.Input[str] | None, depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(RETIREMENT_TYPE, name, None, opts)
        access = {k: kube.get(k) for k in ("kubeconfig", "context", "cluster")}
        # the kubeconfig may be a secret (its contents): stdin is secret as a whole, and never on a command line
        stdin = pulumi.Output.secret(pulumi.Output.all(new_ca_pem, old_ca_pem).apply(
            lambda p: json.dumps({"kube": access, "newCaPem": p[0], "oldCaPem": p[1]})))
        self.step = command.local.Command(
            f"{name}-step",
            create=tool_command(action),
            update=tool_command(action),
            # a retirement that leaves the program (a new rotation, or going back to stage trust) changes nothing
            delete="echo 'nothing to undo: the CA retirement only checks and prunes the ConfigMap'",
            stdin=stdin,
            dir=str(PROJECT_DIR),
            add_previous_output_in_env=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )
        self.register_outputs({})


class Cas:
    """The stage's aggregator CAs (AggregatorCA components, one per generation), which of them signs, what
    the masters trust, and the retirement step. Not a resource itself: each CA stays a top-level
    component, so generation 1 keeps its URNs."""

    def __init__(self, settings: Settings, kube: KubeSettings | None):
        self.stage = stage = Stage.of(settings)
        # the retirement step reads the cluster with the stack's kubernetes:* config, like metrics-server
        self._kube = kube if kube is not None or stage.retirement is None else kube_access.read_settings()
        self.by_generation = {
            g: AggregatorCA(ca_name(g), settings_for(settings, g, protect=stage.protected(g)))
            for g in stage.generations
        }
        self.signer = self.by_generation[stage.signer]
        cas = [self.by_generation[g] for g in stage.generations]
        # aggregatorCaCertPem: what the masters trust (both CAs during a rotation); the newest CA's notAfter
        self.cert_pem: pulumi.Output[str] = (
            cas[0].cert_pem if len(cas) == 1 else pulumi.Output.all(*[c.cert_pem for c in cas]).apply(trust_bundle))
        self.not_after = cas[-1].not_after
        self.count = len(cas)
        # stage sign: the proxy cert waits for the gate
        self.gate: list[pulumi.Resource] = []
        if stage.retirement == "gate":
            self.gate = [self._retirement("gate", [], old=self.by_generation[stage.retiring].cert_pem)]

    def prune_after(self, done: list[pulumi.Resource]) -> None:
        """The rotation done (generation ≥ 2, no pki.caRotation): prune the ConfigMap after every master."""
        if self.stage.retirement == "prune":
            self._retirement("prune", done, old=None)

    def _retirement(self, action: str, after: list[pulumi.Resource], *, old: pulumi.Output[str] | None) -> CaRetirement:
        assert self._kube is not None
        return CaRetirement(f"{ca_name(self.stage.retiring)}-retirement", action, self._kube,
                            new_ca_pem=self.by_generation[self.stage.generation].cert_pem, old_ca_pem=old,
                            depends_on=after)
