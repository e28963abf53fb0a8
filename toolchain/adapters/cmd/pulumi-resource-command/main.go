// Copyright 2026 metrics-aggregation authors.
//
// pulumi-resource-command: a small, project-written stand-in for the `command` Pulumi provider,
// used by the local toolchain only.
//
// Why it exists: the upstream provider (github.com/pulumi/pulumi-command/provider) is not served
// by the Go module proxy this project is limited to, at any version (see toolchain/versions.env).
// The project uses one resource of the `pulumi_command` Python SDK 1.2.1, remote.Command; this
// binary implements it on the same wire names with golang.org/x/crypto/ssh, following the upstream
// provider's behaviour as its sources show it (github.com/pulumi/pulumi-command v1.2.1,
// provider/pkg/provider/remote and common; Check, update, replace and cancel from
// pulumi-go-provider v1.3.0, infer/resource.go and middleware/cancel):
//
//   - create runs `create`; any input change runs `update` (or `create` when no update is set);
//     a change of `triggers` replaces the resource (the SDK sets replaceOnChanges triggers[*]);
//     destroy runs `delete` with the connection and stdin stored in the state.
//   - Check sets the schema's connection defaults (and the proxy's): port 22, user root,
//     dialErrorLimit 10 (-1 = unlimited), perDialTimeout 15 s.
//   - `stdin` is fed to every run; `environment` is sent with SSH "setenv", which fails the run unless
//     the server's AcceptEnv allows the name; PULUMI_COMMAND_STDOUT/STDERR (addPreviousOutputInEnv,
//     default true) are tried the same way, and a refusal is only a warning.
//   - connection.go: host, privateKey (+privateKeyPassword), password, the agent, hostKey, dial
//     retries, proxy. hostKey pins the key and HostKeyAlgorithms to exactly its type (an `ssh-rsa` pin
//     fails against OpenSSH >= 8.8); without it the host key is not checked. The agent is
//     agentSocketPath, or SSH_AUTH_SOCK whenever that is set, also next to a privateKey: a dead socket
//     fails every command, deletes included. Every dial error is retried, dialErrorLimit+1 attempts,
//     0.1 s apart growing x1.5 up to 5 s: "after N failed attempts: ...", "proxy: ..." via a proxy.
//   - output.go: `logging` (none|stdout|stderr|stdoutAndStderr, default both) streams every output
//     line to the engine as an ephemeral status message of the resource; a line over 64 KiB stops
//     the line scanner and the command then hangs, as upstream (pulumi-command issue #201).
//   - outputs stdout/stderr (not secret) and connection (secret); a failing command fails the step
//     with "<error>: running \"<command>\":\n<stdout and stderr interleaved>".
//   - Cancel (and a customTimeouts deadline) cancels the in-flight operations' contexts: a dial stops
//     retrying, but a command that runs goes on to its end (session.Run takes no context).
//
// Not implemented: local.Command, remote.CopyFile, remote.CopyToRemote, local.run (invoke). It is
// NOT the upstream provider: use it for the local sandbox and tests, not for production hosts.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	"metrics-aggregation/toolchain/adapters/internal/provider"
	"metrics-aggregation/toolchain/adapters/internal/serve"
)

const tRemoteCommand = "command:remote:Command"

// The inputs of remote.Command; a change of any of them re-runs (or, triggers, replaces).
var inputKeys = []string{
	"connection", "create", "update", "delete", "stdin", "environment", "triggers",
	"addPreviousOutputInEnv", "logging",
}

func main() {
	prov := &commandProvider{
		Base: provider.Base{
			Name: "command",
			// The SSH credentials and the payload: both stay in the state, for update and delete.
			Secrets: map[string]bool{"connection": true, "stdin": true},
		},
		// the engine's address is the plugin's argument; the output lines go there
		engine: newEngineLog(engineAddress(os.Args[1:])),
		ops:    operations{cancels: map[int]context.CancelFunc{}},
	}
	serve.Main("pulumi-resource-command", func(srv grpc.ServiceRegistrar) {
		pulumirpc.RegisterResourceProviderServer(srv, prov)
	})
}

type commandProvider struct {
	provider.Base
	engine *engineLog
	ops    operations
}

// operations are the contexts of the running operations, which Cancel cancels (pulumi-go-provider
// middleware/cancel/cancel.go, which infer providers are wrapped in).
type operations struct {
	mu      sync.Mutex
	next    int
	cancels map[int]context.CancelFunc
}

// start derives the context of one operation; timeout (seconds, 0 = none) is the customTimeouts value.
func (o *operations) start(ctx context.Context, timeout float64) (context.Context, func()) {
	var cancel context.CancelFunc
	if timeout == 0 {
		ctx, cancel = context.WithCancel(ctx)
	} else {
		ctx, cancel = context.WithTimeout(ctx, time.Duration(timeout*float64(time.Second)))
	}
	o.mu.Lock()
	id := o.next
	o.next++
	o.cancels[id] = cancel
	o.mu.Unlock()
	return ctx, func() {
		o.mu.Lock()
		delete(o.cancels, id)
		o.mu.Unlock()
		cancel()
	}
}

func (o *operations) cancelAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, cancel := range o.cancels {
		cancel()
		delete(o.cancels, id)
	}
}

// Cancel cancels the running operations' contexts: a dial stops retrying; a command already running
// is not stopped (run).
func (p *commandProvider) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	p.ops.cancelAll()
	return &emptypb.Empty{}, nil
}

func (p *commandProvider) logger(ctx context.Context, urn string) logger {
	return logger{ctx: ctx, eng: p.engine, urn: urn}
}

// Check reports a missing connection or host, and sets the connection's (and its proxy's) schema
// defaults as pulumi-go-provider's DefaultCheck does, so the state holds them as upstream's does.
func (p *commandProvider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	if t := provider.ResourceType(req.GetUrn()); t != tRemoteCommand {
		return nil, fmt.Errorf("command: resource type %q is not supported by this provider (only %s)", t, tRemoteCommand)
	}
	news, err := provider.UnmarshalInputs(req.GetNews())
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	conn, ok := news["connection"]
	if !ok {
		failures = append(failures, &pulumirpc.CheckFailure{Property: "connection", Reason: "missing required property 'connection'"})
		return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
	}
	secret := conn.IsSecret()
	if secret {
		conn = conn.SecretValue().Element
	}
	if !conn.IsObject() { // unknown until its inputs are
		return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
	}
	c := conn.ObjectValue()
	if _, has := c["host"]; !has {
		failures = append(failures, &pulumirpc.CheckFailure{Property: "connection.host", Reason: "missing required property 'host'"})
		return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
	}
	c = withDefaults(c)
	if pv, ok := c["proxy"]; ok && pv.IsObject() {
		c["proxy"] = resource.NewObjectProperty(withDefaults(pv.ObjectValue()))
	}
	conn = resource.NewObjectProperty(c)
	if secret {
		conn = resource.MakeSecret(conn)
	}
	news["connection"] = conn
	inputs, err := plugin.MarshalProperties(news, plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true})
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: inputs}, nil
}

func (p *commandProvider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, news, err := provider.OldsAndNews(req)
	if err != nil {
		return nil, err
	}
	if req.GetOldInputs() != nil {
		if oldIn, err := provider.Unmarshal(req.GetOldInputs(), false); err == nil {
			olds = oldIn
		}
	}
	var diffs, replaces []string
	detailed := map[string]*pulumirpc.PropertyDiff{}
	for _, k := range inputKeys {
		if !provider.InputChanged(olds, news, k) {
			continue
		}
		diffs = append(diffs, k)
		kind := pulumirpc.PropertyDiff_UPDATE
		if k == "triggers" {
			kind = pulumirpc.PropertyDiff_UPDATE_REPLACE
			replaces = append(replaces, k)
		}
		detailed[k] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
	}
	return provider.DiffResult(diffs, replaces, detailed), nil
}

func (p *commandProvider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	ctx, done := p.ops.start(ctx, req.GetTimeout())
	defer done()
	return p.CreateFrom(req, func(in resource.PropertyMap) (string, resource.PropertyMap, error) {
		id, err := resource.NewUniqueHex(resourceName(req.GetUrn()), 8, 0)
		if err != nil {
			return "", nil, err
		}
		outs, err := p.run(p.logger(ctx, req.GetUrn()), provider.String(in, "create"), in, nil)
		if err != nil {
			return "", nil, err
		}
		return id, outs, nil
	})
}

func (p *commandProvider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	ctx, done := p.ops.start(ctx, req.GetTimeout())
	defer done()
	return p.UpdateFrom(req, func(olds, news resource.PropertyMap) (resource.PropertyMap, error) {
		cmd := provider.String(news, "update")
		if cmd == "" {
			cmd = provider.String(news, "create")
		}
		return p.run(p.logger(ctx, req.GetUrn()), cmd, news, olds)
	})
}

func (p *commandProvider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	ctx, done := p.ops.start(ctx, req.GetTimeout())
	defer done()
	olds, err := provider.Unmarshal(req.GetProperties(), false)
	if err != nil {
		return nil, err
	}
	if cmd := provider.String(olds, "delete"); cmd != "" {
		if _, err := p.run(p.logger(ctx, req.GetUrn()), cmd, olds, olds); err != nil {
			return nil, err
		}
	}
	return &emptypb.Empty{}, nil
}

// Read: a command has no remote state to read; the state is kept as it is.
func (p *commandProvider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

func resourceName(urn string) string {
	if i := strings.LastIndex(urn, "::"); i >= 0 {
		return urn[i+2:]
	}
	return "command"
}

// loggingOf is the `logging` input; nil when unset (upstream's default: stdout and stderr).
func loggingOf(in resource.PropertyMap) *string {
	if v, ok := in["logging"]; ok && v.IsString() {
		s := v.StringValue()
		return &s
	}
	return nil
}

// run executes cmd over SSH with the inputs' connection, stdin and environment (upstream
// remote/commandOutputs.go run); prev holds the previous outputs (for PULUMI_COMMAND_STDOUT/STDERR).
// It returns the inputs plus stdout/stderr.
func (p *commandProvider) run(log logger, cmd string, in, prev resource.PropertyMap) (resource.PropertyMap, error) {
	outs := in.Copy()
	if cmd == "" {
		if prev != nil {
			outs["stdout"] = prevOr(prev, "stdout")
			outs["stderr"] = prevOr(prev, "stderr")
		} else {
			outs["stdout"] = resource.NewStringProperty("")
			outs["stderr"] = resource.NewStringProperty("")
		}
		return outs, nil
	}
	connV, ok := in["connection"]
	if !ok || !connV.IsObject() {
		return nil, errNoConnection
	}
	client, closer, err := dial(log.ctx, dialer{status: log.infoStatus}, connV.ObjectValue())
	if err != nil {
		return nil, err
	}
	defer closer()

	session, err := client.NewSession()
	if err != nil {
		return nil, err
	}
	defer session.Close()

	if e, ok := in["environment"]; ok && e.IsObject() {
		env := e.ObjectValue()
		for _, k := range env.StableKeys() {
			if v := env[k]; v.IsString() {
				if err := session.Setenv(string(k), v.StringValue()); err != nil {
					log.error(setenvMessage(string(k)))
					return nil, fmt.Errorf("could not set environment variable %q: %w", string(k), err)
				}
			}
		}
	}
	addPrev := true
	if v, ok := in["addPreviousOutputInEnv"]; ok && v.IsBool() {
		addPrev = v.BoolValue()
	}
	if addPrev && prev != nil {
		// tried, and only a warning when the server refuses them
		for _, kv := range [][2]string{
			{"PULUMI_COMMAND_STDOUT", provider.String(prev, "stdout")},
			{"PULUMI_COMMAND_STDERR", provider.String(prev, "stderr")},
		} {
			if kv[1] != "" && session.Setenv(kv[0], kv[1]) != nil {
				log.warning(setenvMessage(kv[0]))
			}
		}
	}
	if s := provider.String(in, "stdin"); s != "" {
		session.Stdin = strings.NewReader(s)
	}
	out := newCommandOutput(loggingOf(in), log.infoStatus)
	session.Stdout, session.Stderr = out.Stdout, out.Stderr

	// No context: a cancelled operation lets a running command go on to its end, as upstream.
	err = session.Run(cmd)
	out.finish()
	if err != nil {
		return nil, commandError(err, cmd, out.both.String())
	}
	outs["stdout"] = resource.NewStringProperty(strings.TrimSuffix(out.stdout.String(), "\n"))
	outs["stderr"] = resource.NewStringProperty(strings.TrimSuffix(out.stderr.String(), "\n"))
	return outs, nil
}

// commandError is upstream's error of a failed run: the command quoted, then stdout and stderr as they
// came, interleaved.
func commandError(err error, cmd, output string) error {
	return fmt.Errorf("%w: running %q:\n%s", err, cmd, output)
}

func setenvMessage(name string) string {
	return fmt.Sprintf("Unable to set '%s'. This only works if your SSH server is configured to accept "+
		"these variables via AcceptEnv. Alternatively, if a Bash-like shell runs the command on the remote host, "+
		"you could prefix the command itself with the variables in the form 'VAR=value command'", name)
}

func prevOr(prev resource.PropertyMap, k string) resource.PropertyValue {
	if v, ok := prev[resource.PropertyKey(k)]; ok {
		return v
	}
	return resource.NewStringProperty("")
}
