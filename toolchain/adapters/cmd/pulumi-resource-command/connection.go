// Copyright 2026 metrics-aggregation authors.

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/retry"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"metrics-aggregation/toolchain/adapters/internal/provider"
)

// The connection defaults of upstream's schema (pulumi-command provider/pkg/provider/remote/connection.go
// and proxyConnection.go, Annotate: SetDefault), applied by Check as pulumi-go-provider's DefaultCheck does.
const (
	defaultUser           = "root"
	defaultPort           = 22
	defaultDialErrorLimit = 10
	defaultPerDialTimeout = 15
	unlimitedDialErrors   = -1
)

// connectionDefaults: the input key and its default, for connection and connection.proxy alike.
var connectionDefaults = []struct {
	key string
	def resource.PropertyValue
}{
	{"user", resource.NewStringProperty(defaultUser)},
	{"port", resource.NewNumberProperty(defaultPort)},
	{"dialErrorLimit", resource.NewNumberProperty(defaultDialErrorLimit)},
	{"perDialTimeout", resource.NewNumberProperty(defaultPerDialTimeout)},
}

// withDefaults returns c with every unset default field set (c is not changed). Unknown values are
// left alone: they are set, just not known yet.
func withDefaults(c resource.PropertyMap) resource.PropertyMap {
	out := c.Copy()
	for _, d := range connectionDefaults {
		if v, ok := out[resource.PropertyKey(d.key)]; !ok || v.IsNull() {
			out[resource.PropertyKey(d.key)] = d.def
		}
	}
	return out
}

// agentSocket is the agent upstream uses (connection.go SSHConfig, connection_unix.go): agentSocketPath
// when set, otherwise SSH_AUTH_SOCK whenever it is set, also when a privateKey or password is given. So a
// stale SSH_AUTH_SOCK (a closed tmux or CI agent) fails every command of a key-only connection. A set
// agentSocketPath is dialled whatever it holds (upstream tests the pointer, not the text): an empty one
// fails with "dial unix: missing address". An empty SSH_AUTH_SOCK counts as unset
// (tryGetDefaultAgentSocket). -> the path, and whether an agent is dialled at all.
func agentSocket(c resource.PropertyMap, getenv func(string) string) (string, bool) {
	if v, ok := c["agentSocketPath"]; ok && v.IsString() {
		return v.StringValue(), true
	}
	env := getenv("SSH_AUTH_SOCK")
	return env, env != ""
}

// hostKeyConfig is upstream's host key check (connection.go SSHConfig): with hostKey, only that key is
// accepted and HostKeyAlgorithms is exactly its type. For an RSA key that is `ssh-rsa` (SHA-1), which
// OpenSSH >= 8.8 no longer offers, so the handshake fails with "no common algorithm for host key".
// Without hostKey nothing is checked.
func hostKeyConfig(c resource.PropertyMap) (ssh.HostKeyCallback, []string, error) {
	v, ok := c["hostKey"]
	if !ok || !v.IsString() {
		return ssh.InsecureIgnoreHostKey(), nil, nil //nolint:gosec // as upstream without hostKey
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(v.StringValue()))
	if err != nil {
		return nil, nil, fmt.Errorf("failed to parse host key: %w", err)
	}
	return ssh.FixedHostKey(pub), []string{pub.Type()}, nil
}

// sshConfig is the client configuration of one connection (upstream connection.go SSHConfig): the
// private key, then the password (and keyboard-interactive with it), then the agent. The returned
// closer closes the agent connection.
func sshConfig(c resource.PropertyMap) (*ssh.ClientConfig, func(), error) {
	noop := func() {}
	callback, algos, err := hostKeyConfig(c)
	if err != nil {
		return nil, noop, err
	}
	user := provider.String(c, "user")
	if _, set := c["user"]; !set {
		user = defaultUser
	}
	cfg := &ssh.ClientConfig{
		User:              user,
		HostKeyCallback:   callback,
		HostKeyAlgorithms: algos,
		Timeout:           time.Duration(provider.Number(c, "perDialTimeout", defaultPerDialTimeout)) * time.Second,
	}
	if v, ok := c["privateKey"]; ok && v.IsString() {
		var signer ssh.Signer
		if pw, ok := c["privateKeyPassword"]; ok && pw.IsString() {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(v.StringValue()), []byte(pw.StringValue()))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(v.StringValue()))
		}
		if err != nil {
			return nil, noop, err
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if v, ok := c["password"]; ok && v.IsString() {
		pw := v.StringValue()
		cfg.Auth = append(cfg.Auth, ssh.Password(pw),
			ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
				answers := make([]string, len(qs))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	if sock, use := agentSocket(c, os.Getenv); use {
		// upstream returns the dial error as it is: "dial unix <path>: connect: ..."
		conn, err := net.Dial("unix", sock)
		if err != nil {
			return nil, noop, err
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
		return cfg, func() { _ = conn.Close() }, nil
	}
	return cfg, noop, nil
}

func endpoint(c resource.PropertyMap) string {
	return net.JoinHostPort(provider.String(c, "host"), strconv.Itoa(int(provider.Number(c, "port", defaultPort))))
}

func dialErrorLimit(c resource.PropertyMap) int {
	return int(provider.Number(c, "dialErrorLimit", defaultDialErrorLimit))
}

// reachedDialErrorLimit: `dials` attempts failed and the limit allows no more (-1: no limit).
func reachedDialErrorLimit(dials, limit int) bool {
	return limit > unlimitedDialErrors && dials > limit
}

// dialer retries as upstream's dialWithRetry (connection.go): pulumi's retry.Until (first delay 0.1 s,
// x1.5, at most 5 s), every error retried (authentication and host-key failures too) until
// dialErrorLimit+1 attempts failed, each failed attempt reported as an ephemeral status message.
type dialer struct {
	status func(string)
	after  func(time.Duration) <-chan time.Time // nil: time.After (tests record the delays)
}

func dialWithRetry[T any](ctx context.Context, d dialer, msg string, limit int, f func() (T, error)) (T, error) {
	var zero T
	ok, data, err := (&retry.Retryer{After: d.after}).Until(ctx, retry.Acceptor{
		Accept: func(try int, _ time.Duration) (bool, any, error) {
			result, err := f()
			if err == nil {
				return true, result, nil
			}
			dials := try + 1
			if reachedDialErrorLimit(dials, limit) {
				return true, nil, fmt.Errorf("after %d failed attempts: %w", try, err)
			}
			of := "inf"
			if limit != unlimitedDialErrors {
				of = strconv.Itoa(limit)
			}
			d.status(fmt.Sprintf("%s %d/%s failed: retrying", msg, dials, of))
			return false, nil, nil
		},
	})
	if ok && err == nil {
		return data.(T), nil
	}
	if err == nil {
		err = ctx.Err() // cancelled while waiting for the next attempt
	}
	return zero, err
}

// dial opens the SSH client of a connection (upstream connection.go Connection.Dial): directly, or
// through connection.proxy, where every error is prefixed with "proxy: ".
func dial(ctx context.Context, d dialer, c resource.PropertyMap) (*ssh.Client, func(), error) {
	cfg, closeAgent, err := sshConfig(c)
	if err != nil {
		return nil, closeAgent, err
	}
	addr := endpoint(c)
	limit := dialErrorLimit(c)
	pv, hasProxy := c["proxy"]
	if !hasProxy || !pv.IsObject() {
		client, err := dialWithRetry(ctx, d, "Dial", limit, func() (*ssh.Client, error) {
			return ssh.Dial("tcp", addr, cfg)
		})
		if err != nil {
			closeAgent()
			return nil, func() {}, err
		}
		return client, func() { _ = client.Close(); closeAgent() }, nil
	}
	pc := withDefaults(pv.ObjectValue())
	closers := []func(){closeAgent}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	fail := func(err error) (*ssh.Client, func(), error) {
		closeAll()
		return nil, func() {}, fmt.Errorf("proxy: %w", err)
	}
	pcfg, closeProxyAgent, err := sshConfig(pc)
	closers = append(closers, closeProxyAgent)
	if err != nil {
		return fail(err)
	}
	jump, err := dialWithRetry(ctx, d, "Dial proxy", dialErrorLimit(pc), func() (*ssh.Client, error) {
		return ssh.Dial("tcp", endpoint(pc), pcfg)
	})
	if err != nil {
		return fail(err)
	}
	closers = append(closers, func() { _ = jump.Close() })
	conn, err := dialWithRetry(ctx, d, "Dial from proxy", limit, func() (net.Conn, error) {
		return jump.Dial("tcp", addr)
	})
	if err != nil {
		return fail(err)
	}
	type handshake struct {
		conn  ssh.Conn
		chans <-chan ssh.NewChannel
		reqs  <-chan *ssh.Request
	}
	// as upstream, the handshake is retried on the same forwarded connection
	hs, err := dialWithRetry(ctx, d, "Dial", limit, func() (handshake, error) {
		cc, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
		return handshake{cc, chans, reqs}, err
	})
	if err != nil {
		_ = conn.Close()
		return fail(err)
	}
	client := ssh.NewClient(hs.conn, hs.chans, hs.reqs)
	return client, func() { _ = client.Close(); closeAll() }, nil
}

var errNoConnection = errors.New("connection is required")
