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
// provider/pkg/provider/remote and common; update and replace from pulumi-go-provider v1.3.0,
// infer/resource.go):
//
//   - create runs `create`; any input change runs `update` (or `create` when no update is set);
//     a change of `triggers` replaces the resource (the SDK sets replaceOnChanges triggers[*]);
//     destroy runs `delete` with the connection and stdin stored in the state.
//   - `stdin` is fed to every run; `environment` and (addPreviousOutputInEnv, default true)
//     PULUMI_COMMAND_STDOUT/PULUMI_COMMAND_STDERR are sent with SSH "setenv", which fails unless the
//     server's AcceptEnv allows the name.
//   - connection: host, port (22), user (root), privateKey (+privateKeyPassword), password,
//     agentSocketPath (or SSH_AUTH_SOCK), hostKey (pinned; otherwise not verified), dialErrorLimit
//     (10, -1 = unlimited), perDialTimeout (15 s), proxy (a jump host with the same fields).
//   - outputs stdout/stderr (not secret) and connection (secret); a failing command fails the step
//     with the exit status, the command line and its output.
//
// Not implemented: local.Command, remote.CopyFile, remote.CopyToRemote, local.run (invoke),
// `logging` (accepted, output is always captured). It is NOT the upstream provider: use it for the
// local sandbox and tests, not for production hosts.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
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
	prov := &commandProvider{provider.Base{
		Name: "command",
		// The SSH credentials and the payload: both stay in the state, for update and delete.
		Secrets: map[string]bool{"connection": true, "stdin": true},
	}}
	serve.Main("pulumi-resource-command", func(srv grpc.ServiceRegistrar) {
		pulumirpc.RegisterResourceProviderServer(srv, prov)
	})
}

type commandProvider struct {
	provider.Base
}

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
	} else if conn.IsSecret() {
		conn = conn.SecretValue().Element
	}
	if ok && conn.IsObject() {
		if _, has := conn.ObjectValue()["host"]; !has {
			failures = append(failures, &pulumirpc.CheckFailure{Property: "connection.host", Reason: "missing required property 'host'"})
		}
	}
	return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
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
	return p.CreateFrom(req, func(in resource.PropertyMap) (string, resource.PropertyMap, error) {
		outs, err := p.run(ctx, provider.String(in, "create"), in, nil)
		if err != nil {
			return "", nil, err
		}
		return resourceName(req.GetUrn()) + randomSuffix(), outs, nil
	})
}

func (p *commandProvider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	return p.UpdateFrom(req, func(olds, news resource.PropertyMap) (resource.PropertyMap, error) {
		cmd := provider.String(news, "update")
		if cmd == "" {
			cmd = provider.String(news, "create")
		}
		return p.run(ctx, cmd, news, olds)
	})
}

func (p *commandProvider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	olds, err := provider.Unmarshal(req.GetProperties(), false)
	if err != nil {
		return nil, err
	}
	if cmd := provider.String(olds, "delete"); cmd != "" {
		if _, err := p.run(ctx, cmd, olds, olds); err != nil {
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

func randomSuffix() string {
	return strconv.FormatInt(time.Now().UnixNano()%100000000, 36)
}

// run executes cmd over SSH with the inputs' connection, stdin and environment; prev holds the
// previous outputs (for PULUMI_COMMAND_STDOUT/STDERR). It returns the inputs plus stdout/stderr.
func (p *commandProvider) run(ctx context.Context, cmd string, in, prev resource.PropertyMap) (resource.PropertyMap, error) {
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
		return nil, errors.New("connection is required")
	}
	client, closer, err := dial(ctx, connV.ObjectValue())
	if err != nil {
		return nil, err
	}
	defer closer()

	session, err := client.NewSession()
	if err != nil {
		return nil, fmt.Errorf("opening an SSH session: %w", err)
	}
	defer session.Close()

	env := map[string]string{}
	if e, ok := in["environment"]; ok && e.IsObject() {
		for k, v := range e.ObjectValue() {
			if v.IsString() {
				env[string(k)] = v.StringValue()
			}
		}
	}
	addPrev := true
	if v, ok := in["addPreviousOutputInEnv"]; ok && v.IsBool() {
		addPrev = v.BoolValue()
	}
	if addPrev && prev != nil {
		if s := provider.String(prev, "stdout"); s != "" {
			env["PULUMI_COMMAND_STDOUT"] = s
		}
		if s := provider.String(prev, "stderr"); s != "" {
			env["PULUMI_COMMAND_STDERR"] = s
		}
	}
	names := make([]string, 0, len(env))
	for k := range env {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if err := session.Setenv(k, env[k]); err != nil {
			return nil, fmt.Errorf("unable to set '%s'. This only works if your SSH server is configured "+
				"to accept these variables via AcceptEnv. Alternatively, if a Bash-like shell runs the command "+
				"on the remote host, you could prefix the command itself with the variables in the form 'VAR=value "+
				"command': %w", k, err)
		}
	}
	if s := provider.String(in, "stdin"); s != "" {
		session.Stdin = strings.NewReader(s)
	}
	var stdout, stderr bytes.Buffer
	session.Stdout, session.Stderr = &stdout, &stderr

	done := make(chan error, 1)
	go func() { done <- session.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = session.Signal(ssh.SIGTERM)
		err = ctx.Err()
	}
	outStr := strings.TrimSuffix(stdout.String(), "\n")
	errStr := strings.TrimSuffix(stderr.String(), "\n")
	if err != nil {
		return nil, fmt.Errorf("%w: running %q:\n%s\n%s", err, cmd, outStr, errStr)
	}
	outs["stdout"] = resource.NewStringProperty(outStr)
	outs["stderr"] = resource.NewStringProperty(errStr)
	return outs, nil
}

func prevOr(prev resource.PropertyMap, k string) resource.PropertyValue {
	if v, ok := prev[resource.PropertyKey(k)]; ok {
		return v
	}
	return resource.NewStringProperty("")
}

// ---------------------------------------------------------------- SSH connection

func clientConfig(c resource.PropertyMap) (*ssh.ClientConfig, func(), error) {
	user := provider.String(c, "user")
	if user == "" {
		user = "root"
	}
	cfg := &ssh.ClientConfig{User: user, HostKeyCallback: ssh.InsecureIgnoreHostKey()} //nolint:gosec // as upstream without hostKey
	cfg.Timeout = time.Duration(provider.Number(c, "perDialTimeout", 15)) * time.Second
	closer := func() {}
	if hk := provider.String(c, "hostKey"); hk != "" {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hk))
		if err != nil {
			return nil, closer, fmt.Errorf("connection.hostKey: %w", err)
		}
		cfg.HostKeyCallback = ssh.FixedHostKey(pub)
		cfg.HostKeyAlgorithms = []string{pub.Type()}
		if pub.Type() == ssh.KeyAlgoRSA {
			cfg.HostKeyAlgorithms = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
	}
	if key := provider.String(c, "privateKey"); key != "" {
		var signer ssh.Signer
		var err error
		if pw := provider.String(c, "privateKeyPassword"); pw != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(key), []byte(pw))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(key))
		}
		if err != nil {
			return nil, closer, fmt.Errorf("connection.privateKey: %w", err)
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if pw := provider.String(c, "password"); pw != "" {
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				answers := make([]string, len(qs))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	sock := provider.String(c, "agentSocketPath")
	if sock == "" && len(cfg.Auth) == 0 {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock != "" {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return nil, closer, fmt.Errorf("connection.agentSocketPath %s: %w", sock, err)
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		closer = func() { _ = conn.Close() }
	}
	return cfg, closer, nil
}

func address(c resource.PropertyMap) string {
	return net.JoinHostPort(provider.String(c, "host"), strconv.Itoa(int(provider.Number(c, "port", 22))))
}

// withRetries dials up to dialErrorLimit times (default 10; -1 = no limit), 1 s apart.
func withRetries[T any](ctx context.Context, c resource.PropertyMap, what string, f func() (T, error)) (T, error) {
	limit := int(provider.Number(c, "dialErrorLimit", 10))
	var zero T
	var last error
	for i := 0; limit < 0 || i < limit || i == 0; i++ {
		v, err := f()
		if err == nil {
			return v, nil
		}
		last = err
		if strings.Contains(err.Error(), "host key mismatch") || strings.Contains(err.Error(), "unable to authenticate") {
			break // not transient
		}
		select {
		case <-ctx.Done():
			return zero, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return zero, fmt.Errorf("failed to dial %s: %w", what, last)
}

func dial(ctx context.Context, c resource.PropertyMap) (*ssh.Client, func(), error) {
	cfg, closeAgent, err := clientConfig(c)
	if err != nil {
		return nil, closeAgent, err
	}
	addr := address(c)
	proxyV, hasProxy := c["proxy"]
	if !hasProxy || !proxyV.IsObject() {
		client, err := withRetries(ctx, c, addr, func() (*ssh.Client, error) { return ssh.Dial("tcp", addr, cfg) })
		if err != nil {
			closeAgent()
			return nil, func() {}, err
		}
		return client, func() { _ = client.Close(); closeAgent() }, nil
	}
	pc := proxyV.ObjectValue()
	pcfg, closeProxyAgent, err := clientConfig(pc)
	if err != nil {
		closeAgent()
		return nil, func() {}, err
	}
	paddr := address(pc)
	jump, err := withRetries(ctx, pc, "proxy "+paddr, func() (*ssh.Client, error) { return ssh.Dial("tcp", paddr, pcfg) })
	if err != nil {
		closeAgent()
		closeProxyAgent()
		return nil, func() {}, err
	}
	client, err := withRetries(ctx, c, addr+" via "+paddr, func() (*ssh.Client, error) {
		conn, err := jump.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		cc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
		if err != nil {
			_ = conn.Close()
			return nil, err
		}
		return ssh.NewClient(cc, chans, reqs), nil
	})
	if err != nil {
		_ = jump.Close()
		closeAgent()
		closeProxyAgent()
		return nil, func() {}, err
	}
	return client, func() { _ = client.Close(); _ = jump.Close(); closeAgent(); closeProxyAgent() }, nil
}
