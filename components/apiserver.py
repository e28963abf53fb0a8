"""ApiserverAggregation: the kube-apiserver reconfiguration on every master, over SSH (pulumi-command).

Per master, two remote commands:

    <master>-certs   installs the host script and its   /var/lib/metrics-aggregation/scripts/
                     config editor, then install-certs  apiserver-aggregation-<sha256[:12]>.sh (0755) and
                     / remove-certs (stdin: the script, apiserver-flags-editor-<sha256[:12]>.awk (0644),
                     the editor, then the PEMs)         content-addressed, sha256-checked;
                                                        <certDir>/aggregator-ca.pem (0644),
                                                        aggregator.pem (0644), aggregator-key.pem (0600)
    <master>-flags   apply / revert                     the --requestheader-* / --proxy-client-* flags (and
                                                        the extraFlags of apiserver and the master) in
                                                        the layout's config file; restart; wait for /readyz

The script and the editor travel on stdin, once per master, instead of inside every command line: command
lines stay short, so `pulumi preview --diff` shows a change of either as a new checksum in the flags
command, and pulumi-command's error messages (which quote the command line) show the real error. The
certs steps run in parallel; master N's flags step waits for master N-1's (one apiserver down at a time,
in the order of `masters`). On destroy the flags steps revert in reverse order, then the certs, the
script and the editor go.

Secrets travel on stdin only: never in a command line or an environment variable (previews, logs,
process lists and pulumi-command's error messages show those). Re-runs are driven by inputs (command
strings, stdin), never by `triggers`, which would replace and so run the old `delete` (revert) after
the new `create`.
"""

from __future__ import annotations

import functools
import hashlib
import shlex
from collections.abc import Sequence
from pathlib import Path

import pulumi
import pulumi_command as command

from components import ca_rotation, contract, pki
from components.config import Layout, Master, Settings

SCRIPT_PATH = Path(__file__).parent / "scripts" / "apiserver-aggregation.sh"
SCRIPT_NAME = "apiserver-aggregation"
# the config editor the script runs with awk (--editor): its own file, installed next to the script
EDITOR_PATH = Path(__file__).parent / "scripts" / "apiserver-flags-editor.awk"
EDITOR_NAME = "apiserver-flags-editor"
HOST_SCRIPT_DIR = "/var/lib/metrics-aggregation/scripts"

# A rotated SSH key must not re-run (and so restart) anything; `delete` keeps using the stored key.
_IGNORE_KEY_ROTATION = ["connection.privateKey", "connection.proxy.privateKey"]

# What pulumi-command streams of each step's output while it runs (its `logging` input, which create, update
# and delete share). Left unset, upstream streams every stdout and stderr line as a status message
# (pulumi-command provider/pkg/provider/remote/commandOutputs.go, util.go LogOutput), and a line longer than
# 64 KiB stops that scanner: the pipe fills and the command hangs (pulumi-command issue #201). Streaming
# changes nothing else: stdout and stderr are kept in state either way, and a failed step's error carries its
# whole interleaved output whatever this says ("%w: running %q:\n…", commandOutputs.go), so the user always
# sees why it failed. So each kind of step streams only what is bounded, secret-free and worth watching, and
# `_step` takes the choice from here: a new kind of step fails until it has one (tests/unit/test_logging.py).
STEP_LOGGING: dict[str, command.remote.Logging] = {
    # install the script and the editor, then install-certs / remove-certs: seconds, no restart. Its stdin
    # carries the proxy-client key (never printed) and its stdout data the program reads (the "no longer
    # trusts the CA sha256:…" lines, components/ca_rotation.py): nothing to watch, nothing to stream.
    "certs": command.remote.Logging.NONE,
    # apply / revert: a restart and the readiness wait, up to apiserver.readyTimeoutSeconds (twice with a
    # rollback), one master after another. stdout is the script's progress ("restarting: …", "restart seen
    # after …", "ready after …"): short lines of config values (no key material; the restart command's own
    # output cut to 20 lines of at most 300 bytes), worth watching. stderr holds the warnings and, on failure,
    # the tail of the apiserver's own log, lines that are not the script's to bound: not streamed (the
    # error shows them).
    "flags": command.remote.Logging.STDOUT,
    # apiserver.manage: false: the read-only check; a second at most, one result line or the problems that
    # the error shows anyway.
    "verify": command.remote.Logging.NONE,
}


# --- what a master gets: paths and flags, derived from the settings ---------------------------------

# apiserver.configPath / certDir / restartCommand when the stack leaves them unset, per layout. Every layout
# but static-pod has a restart command (config validation relies on that, a unit test holds it).
LAYOUT_DEFAULTS: dict[Layout, dict[str, str]] = {
    Layout.ENV_FILE: {
        "config_path": "/etc/kubernetes/kube-apiserver.conf",
        "cert_dir": "/etc/kubernetes/ssl",
        "restart_command": "systemctl restart kube-apiserver",
    },
    Layout.SYSTEMD_UNIT: {
        "config_path": "/etc/systemd/system/kube-apiserver.service",
        "cert_dir": "/etc/kubernetes/ssl",
        "restart_command": "systemctl daemon-reload && systemctl restart kube-apiserver",
    },
    Layout.STATIC_POD: {
        "config_path": "/etc/kubernetes/manifests/kube-apiserver.yaml",
        "cert_dir": "/etc/kubernetes/pki",
        # The kubelet restarts the static pod when its manifest changes.
        "restart_command": "",
    },
}


def _resolved(settings: Settings, field: str, layout: Layout) -> str:
    """apiserver.<field> as given, else the layout's default."""
    value = getattr(settings.apiserver, field)
    return LAYOUT_DEFAULTS[layout][field] if value is None else value


def config_path(settings: Settings, master: Master) -> str:
    """The kube-apiserver config file on `master`: its own configPath, apiserver.configPath, the layout's."""
    return master.config_path or _resolved(settings, "config_path", settings.master_layout(master))


def cert_dir(settings: Settings, master: Master | None = None) -> str:
    """Where the PEM files go on `master` (None: the default layout's, the `apiserverFlags` output's)."""
    return _resolved(settings, "cert_dir", settings.master_layout(master) if master else settings.apiserver.layout)


def restart_command(settings: Settings, master: Master) -> str:
    return _resolved(settings, "restart_command", settings.master_layout(master))


def extra_flags(settings: Settings, master: Master | None = None) -> dict[str, str]:
    """apiserver.extraFlags with `master`'s extraFlags merged over them (the master's value wins), sorted."""
    merged = {**settings.apiserver.extra_flags, **(master.extra_flags if master else {})}
    return dict(sorted(merged.items()))


def apiserver_flags(settings: Settings, master: Master | None = None) -> dict[str, str]:
    """The kube-apiserver flags the program sets on `master` (docs/contracts.md, "Files on each master"):
    the aggregation flags (contract.MANAGED_FLAGS, paths in the master's certDir), then apiserver.extraFlags
    merged with the master's extraFlags, sorted by name.

    Without a master: the set common to every master, the `apiserverFlags` output: the default
    layout's certDir and apiserver.extraFlags only (no master's own extraFlags)."""
    if master is not None and not isinstance(master, Master):
        raise TypeError(
            f"apiserver_flags takes a Master (for its certDir and extraFlags), not {type(master).__name__}: "
            "call apiserver_flags(settings, master)"
        )
    d = cert_dir(settings, master)
    flags = {
        contract.REQUESTHEADER_CLIENT_CA_FILE: f"{d}/{contract.CA_CERT_FILE}",
        contract.REQUESTHEADER_ALLOWED_NAMES: ",".join(pki.requestheader_allowed_names(settings)),
        contract.REQUESTHEADER_EXTRA_HEADERS_PREFIX: "X-Remote-Extra-",
        contract.REQUESTHEADER_GROUP_HEADERS: "X-Remote-Group",
        contract.REQUESTHEADER_USERNAME_HEADERS: "X-Remote-User",
        contract.PROXY_CLIENT_CERT_FILE: f"{d}/{contract.PROXY_CERT_FILE}",
        contract.PROXY_CLIENT_KEY_FILE: f"{d}/{contract.PROXY_KEY_FILE}",
    }
    if settings.apiserver.enable_aggregator_routing:
        flags[contract.ENABLE_AGGREGATOR_ROUTING] = "true"
    flags.update(extra_flags(settings, master))
    return flags


# --- the host script and its command lines -----------------------------------------------------------


@functools.cache
def script_text() -> str:
    return SCRIPT_PATH.read_text()


@functools.cache
def editor_text() -> str:
    return EDITOR_PATH.read_text()


def host_files_text() -> str:
    """What the certs and verify steps install from stdin: the script, then the editor."""
    return script_text() + editor_text()


def _host_path(name: str, text: str, suffix: str) -> str:
    """Where a file lives on a master: content-addressed, so every version has its own file."""
    return f"{HOST_SCRIPT_DIR}/{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}{suffix}"


@functools.cache
def host_script_path() -> str:
    return _host_path(SCRIPT_NAME, script_text(), ".sh")


@functools.cache
def host_editor_path() -> str:
    return _host_path(EDITOR_NAME, editor_text(), ".awk")


def _sudo(line: str, sudo: bool) -> str:
    return f"sudo -n {line}" if sudo else line


def _install_script(then: str) -> str:
    """Shell that installs the script, then the editor, from the first bytes of stdin (each atomically,
    after checking its sha256; a no-op rewrite when it is there already), then runs `then` with the rest
    ($f: the script)."""
    def install(text: str, mode: str, path: str) -> str:
        data = text.encode()
        return f'i {len(data)} {hashlib.sha256(data).hexdigest()} {mode} {shlex.quote(path)}; '

    return (
        "set -eu; umask 022; "
        f"d={shlex.quote(HOST_SCRIPT_DIR)}; f={shlex.quote(host_script_path())}; "
        '(umask 077; mkdir -p "$d"); t=""; trap \'rm -f "$t"\' EXIT; '
        'i() { t=$(mktemp "$d/.install.XXXXXX"); head -c "$1" > "$t"; echo "$2  $t" | sha256sum -c --quiet - '
        '|| { echo "$4 arrived damaged (sha256 mismatch): not installed" >&2; exit 1; }; '
        'chmod "$3" "$t"; mv -f "$t" "$4"; }; '
        + install(script_text(), "0755", host_script_path())
        + install(editor_text(), "0644", host_editor_path())
        + then
    )


def _remove_scripts() -> str:
    """Shell that removes the installed scripts and editors, unless a config or cert dir on the host is
    still managed (an `.owner` file in the state dir): then another resource (a renamed master) still needs
    them. Then the state dir itself (`_install_script` creates it), when empty: a master had none before the program;
    a failing rmdir means it holds other state (another owner's, the user's set-aside files) and stays."""
    state = shlex.quote(HOST_SCRIPT_DIR.rsplit("/", 1)[0])
    return (
        f"set -- {state}/*.owner; "
        'if [ -e "$1" ]; then echo "kept the host scripts: still managing $*"; exit 0; fi; '
        f"rm -f {shlex.quote(HOST_SCRIPT_DIR)}/{SCRIPT_NAME}-*.sh {shlex.quote(HOST_SCRIPT_DIR)}/{EDITOR_NAME}-*.awk; "
        f"rmdir {shlex.quote(HOST_SCRIPT_DIR)} 2>/dev/null || true; "
        f"rmdir {state} 2>/dev/null || true"
    )


def certs_options(settings: Settings, master: Master) -> list[tuple[str, str]]:
    """The options of install-certs / remove-certs on `master`: the PEM file names (contract.PEM_FILES)
    as one comma-separated word, in the order of the PEM blocks on stdin."""
    options = [("--master", master.name), ("--cert-dir", cert_dir(settings, master)),
               ("--pem-files", ",".join(contract.PEM_FILES))]
    # during a CA rotation the masters trust two CAs (components/ca_rotation.py); one: left out, so the
    # command lines of stacks that never rotate stay as they were
    trusted = len(ca_rotation.Stage.of(settings).generations)
    if trusted > 1:
        options.append(("--ca-certs", str(trusted)))
    # apiserver.keyOwner goes to the certs step only (the step that writes the key); unset, the option is
    # left out, so stacks without it keep their command lines
    if settings.apiserver.key_owner:
        options.append(("--key-owner", settings.apiserver.key_owner))
    return options


def flags_options(settings: Settings, master: Master) -> list[tuple[str, str]]:
    """The options of apply / revert on `master`: where and how, then every flag as --flag --NAME=VALUE
    (the aggregation flags, then apiserver.extraFlags merged with this master's extraFlags)."""
    options = [
        ("--master", master.name),
        ("--cert-dir", cert_dir(settings, master)),
        ("--layout", settings.master_layout(master).value),
        ("--config-path", config_path(settings, master)),
        ("--restart-command", restart_command(settings, master)),
        ("--readyz-url", settings.apiserver.readyz_url),
        ("--ready-timeout", str(settings.apiserver.ready_timeout_seconds)),
    ]
    # apiserver.readySteadySeconds: left out when unset (the script's default), like --key-owner
    if settings.apiserver.ready_steady_seconds is not None:
        options.append(("--ready-steady-seconds", str(settings.apiserver.ready_steady_seconds)))
    options += _container_option(settings, master)
    return options + [("--flag", f"{k}={v}") for k, v in apiserver_flags(settings, master).items()]


def _container_option(settings: Settings, master: Master) -> list[tuple[str, str]]:
    """--container NAME (apiserver.containerName) for a static-pod master, when set."""
    if settings.apiserver.container_name and settings.master_layout(master) is Layout.STATIC_POD:
        return [("--container", settings.apiserver.container_name)]
    return []


def _quoted(options: Sequence[tuple[str, str]]) -> str:
    """The options as shell words: `--name value` pairs, each word quoted."""
    return " ".join(shlex.quote(a) for pair in options for a in pair)


def certs_commands(options: Sequence[tuple[str, str]], *, sudo: bool) -> tuple[str, str]:
    """(apply, undo) of a master's certs step.

    apply: stdin is the host script and the editor followed by the PEM bundle; both are installed from the
    first bytes, then `install-certs` reads the PEMs from the rest. undo: `remove-certs`, then the files."""
    args = _quoted(options)
    apply = _install_script(f'exec bash "$f" install-certs {args}')
    undo = (
        f"set -eu; f={shlex.quote(host_script_path())}; "
        f'if [ -f "$f" ]; then bash "$f" remove-certs {args}; '
        'else echo "warning: $f is gone; the certificates were left in place" >&2; fi; '
        + _remove_scripts()
    )
    return _sudo(f"sh -c {shlex.quote(apply)}", sudo), _sudo(f"sh -c {shlex.quote(undo)}", sudo)


def _with_editor(options: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """options + the installed editor: its checksum in the command line re-runs the step when it changes."""
    return [*options, ("--editor", host_editor_path())]


def host_command(action: str, options: Sequence[tuple[str, str]], *, sudo: bool) -> str:
    """The exact command line run on a master: the installed script, its action and options (then the
    editor), quoted."""
    argv = ["bash", host_script_path(), action]
    for name, value in _with_editor(options):
        argv += [name, value]
    return _sudo(" ".join(shlex.quote(a) for a in argv), sudo)


# apiserver.manage: false — the read-only check of a master that already runs aggregation (kubeadm's
# front-proxy, a hand-made setup): which flags must hold what, and which must name existing files.
VERIFY_HEADER_FLAGS = (
    contract.REQUESTHEADER_EXTRA_HEADERS_PREFIX,
    contract.REQUESTHEADER_GROUP_HEADERS,
    contract.REQUESTHEADER_USERNAME_HEADERS,
)
VERIFY_FILE_FLAGS = (contract.REQUESTHEADER_CLIENT_CA_FILE, contract.PROXY_CLIENT_CERT_FILE, contract.PROXY_CLIENT_KEY_FILE)


def verify_options(settings: Settings, master: Master) -> list[tuple[str, str]]:
    """The options of `verify` on `master`: the header flags with the standard values (the ones this
    program and kubeadm set), the CA/cert/key flags naming existing files, requestheader-allowed-names
    empty or listing pki.proxyClientCommonName, and --enable-aggregator-routing=true when configured."""
    flags = apiserver_flags(settings, master)
    options = [
        ("--master", master.name),
        ("--layout", settings.master_layout(master).value),
        ("--config-path", config_path(settings, master)),
        *_container_option(settings, master),
    ]
    for name in VERIFY_HEADER_FLAGS:
        options += [("--require", f"{name}={flags[name]}"), ("--why", "the standard value, as kubeadm and this program set it")]
    options += [("--require-file-flag", name) for name in VERIFY_FILE_FLAGS]
    options += [
        ("--require-listed", f"{contract.REQUESTHEADER_ALLOWED_NAMES}={settings.pki.proxy_client_common_name}"),
        ("--why", "pki.proxyClientCommonName"),
    ]
    if settings.apiserver.enable_aggregator_routing:
        options += [
            ("--require", f"{contract.ENABLE_AGGREGATOR_ROUTING}=true"),
            ("--why", "apiserver.enableAggregatorRouting: true wants =true"),
        ]
    return options


def verify_step_commands(options: Sequence[tuple[str, str]], *, sudo: bool) -> tuple[str, str]:
    """(create, delete) of a master's verify step (apiserver.manage: false); its stdin is `host_files_text()`.

    create: install the script and the editor from stdin (as the certs step does), then `verify`: it reads
    the config file and changes nothing. delete: remove the installed files, unless a `.owner` file says a
    certs or flags step (of this or another stack) still needs them."""
    args = _quoted(_with_editor(options))
    create = _install_script(f'exec bash "$f" verify {args}')
    delete = "set -eu; " + _remove_scripts()
    return _sudo(f"sh -c {shlex.quote(create)}", sudo), _sudo(f"sh -c {shlex.quote(delete)}", sudo)


def step_name(master: Master, kind: str) -> str:
    """The logical name of a master's remote command: `<master>-certs`, `<master>-flags`, `<master>-verify`."""
    return f"{master.name}-{kind}"


def flag_props(settings: Settings) -> list[dict[str, object]]:
    """ApiserverAggregation's `masters` (contract.APISERVER_MASTERS): what every master's flags step sets,
    in rollout order; none with apiserver.manage: false."""
    if not settings.apiserver.manage:
        return []
    return [
        {
            contract.MASTER_NAME: m.name,
            contract.MASTER_FLAGS_STEP: step_name(m, "flags"),  # the step __init__ registers
            contract.MASTER_CERT_DIR: cert_dir(settings, m),
            contract.MASTER_FLAGS: apiserver_flags(settings, m),
        }
        for m in settings.masters
    ]


def _connection(settings: Settings, master: Master) -> command.remote.ConnectionArgs:
    ssh = settings.ssh
    key = pulumi.Output.secret(ssh.private_key) if ssh.private_key else None
    password = pulumi.Output.secret(ssh.private_key_password) if ssh.private_key_password else None
    proxy = None
    if ssh.bastion:
        b = ssh.bastion
        proxy = command.remote.ProxyConnectionArgs(
            host=b.host,
            port=b.port,
            user=b.user or ssh.user,
            private_key=pulumi.Output.secret(b.private_key) if b.private_key else key,
            private_key_password=None if b.private_key else password,
            agent_socket_path=ssh.agent_socket_path,
            host_key=b.host_key,
            dial_error_limit=ssh.dial_error_limit,
            per_dial_timeout=ssh.per_dial_timeout,
        )
    return command.remote.ConnectionArgs(
        host=master.address,
        port=master.port or ssh.port,
        user=master.user or ssh.user,
        private_key=key,
        private_key_password=password,
        agent_socket_path=ssh.agent_socket_path,
        host_key=master.host_key,
        dial_error_limit=ssh.dial_error_limit,
        per_dial_timeout=ssh.per_dial_timeout,
        proxy=proxy,
    )


def _pem_bundle(ca_cert: str, cert: str, key: str) -> str:
    """stdin of install-certs: CA certificate, proxy-client certificate, proxy-client key."""
    return "".join(p if p.endswith("\n") else p + "\n" for p in (ca_cert, cert, key))


class ApiserverAggregation(pulumi.ComponentResource):
    """Certificates and aggregation flags on every master, rolled out one master at a time.

    Its input and output `masters` (contract.APISERVER_MASTERS) say what each master's flags step sets, so
    the policy pack checks the flags by name instead of parsing the steps' command lines."""

    flags: dict[str, str]
    final_steps: list[pulumi.Resource]  # every master's flags step, in rollout order
    # what metrics-server waits for: the last flags step (it transitively waits for every master), or
    # every master's verify step with apiserver.manage: false
    done: list[pulumi.Resource]

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        ca_cert_pem: pulumi.Input[str] | None = None,
        proxy_cert_pem: pulumi.Input[str] | None = None,
        proxy_key_pem: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        # what each master's flags step sets, as the component's input: the policy pack reads it there
        masters = flag_props(settings)
        super().__init__(contract.APISERVER_TYPE, name, {contract.APISERVER_MASTERS: masters}, opts)
        if not settings.apiserver.manage:
            self._verify_only(settings)
            return
        # stdin of every certs step: the host script and its editor, then the PEMs (secret as a whole)
        stdin = pulumi.Output.secret(
            pulumi.Output.all(ca_cert_pem, proxy_cert_pem, proxy_key_pem).apply(
                lambda p: host_files_text() + _pem_bundle(*p)
            )
        )
        sudo = settings.ssh.sudo
        previous: pulumi.Resource | None = None
        self.final_steps = []
        self.certs_steps: list[command.remote.Command] = []
        for master in settings.masters:
            step = functools.partial(self._step, master, _connection(settings, master))
            certs = step("certs", *certs_commands(certs_options(settings, master), sudo=sudo), [], stdin=stdin)
            self.certs_steps.append(certs)
            options = flags_options(settings, master)
            flags = step("flags", host_command("apply", options, sudo=sudo), host_command("revert", options, sudo=sudo),
                         [certs] + ([previous] if previous else []))
            previous = flags
            self.final_steps.append(flags)
        self.done = [self.final_steps[-1]]
        # the `apiserverFlags` output: what every master gets (no master's own extraFlags)
        self.flags = apiserver_flags(settings)
        self.register_outputs({"flags": self.flags, contract.APISERVER_MASTERS: masters})

    def _verify_only(self, settings: Settings) -> None:
        """apiserver.manage: false: the apiservers already run aggregation (kubeadm's front-proxy, a
        hand-made setup), so nothing is written; a read-only `<master>-verify` step per master fails `up`
        naming the master and each missing or mismatched flag. The steps change nothing, so they run in
        parallel, and metrics-server waits for all of them. They re-run when their options change."""
        self.final_steps = []
        for master in settings.masters:
            create, delete = verify_step_commands(verify_options(settings, master), sudo=settings.ssh.sudo)
            step = self._step(master, _connection(settings, master), "verify", create, delete, [], stdin=host_files_text())
            self.final_steps.append(step)
        self.done = list(self.final_steps)
        self.flags = {}  # this program sets no flag
        self.register_outputs({"flags": self.flags, contract.APISERVER_MASTERS: []})

    def _step(
        self,
        master: Master,
        connection: command.remote.ConnectionArgs,
        kind: str,
        apply: str,
        undo: str,
        after: list[pulumi.Resource],
        stdin: pulumi.Input[str] | None = None,
    ) -> command.remote.Command:
        """One remote command of a master, the only place one is made; `update` is `create` again: re-runs come
        from inputs. What it streams while it runs: STEP_LOGGING."""
        return command.remote.Command(
            step_name(master, kind),
            connection=connection,
            create=apply,
            update=apply,
            delete=undo,
            stdin=stdin,
            add_previous_output_in_env=False,
            logging=STEP_LOGGING[kind],  # a KeyError for a kind of step without a deliberate choice
            opts=pulumi.ResourceOptions(parent=self, depends_on=after, ignore_changes=_IGNORE_KEY_ROTATION),
        )
