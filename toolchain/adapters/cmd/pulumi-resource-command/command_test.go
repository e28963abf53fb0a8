package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/ssh"
	"google.golang.org/protobuf/types/known/emptypb"
)

// recordDelays is a retry clock that fires at once and records every delay asked for.
func recordDelays(delays *[]time.Duration) func(time.Duration) <-chan time.Time {
	return func(d time.Duration) <-chan time.Time {
		*delays = append(*delays, d)
		ch := make(chan time.Time, 1)
		ch <- time.Now()
		return ch
	}
}

// Upstream connection.go dialWithRetry on pulumi's retry.Until: dialErrorLimit+1 attempts, 0.1 s growing
// x1.5 up to 5 s, a status message per retried failure, "after N failed attempts".
func TestDialRetriesBackOffAndStopAfterTheLimit(t *testing.T) {
	var delays []time.Duration
	var statuses []string
	calls := 0
	boom := errors.New("ssh: handshake failed: ssh: unable to authenticate")
	_, err := dialWithRetry(context.Background(), dialer{
		status: func(s string) { statuses = append(statuses, s) }, after: recordDelays(&delays),
	}, "Dial", 10, func() (int, error) { calls++; return 0, boom })
	if calls != 11 {
		t.Errorf("attempts = %d, want dialErrorLimit+1 = 11", calls)
	}
	if err == nil || err.Error() != "after 10 failed attempts: "+boom.Error() || !errors.Is(err, boom) {
		t.Errorf("err = %v", err)
	}
	want := []time.Duration{}
	d := 100 * time.Millisecond
	for range 10 {
		want = append(want, min(d, 5*time.Second))
		d = time.Duration(float64(min(d, 5*time.Second)) * 1.5)
	}
	if !reflect.DeepEqual(delays, want) {
		t.Errorf("delays = %v, want %v", delays, want)
	}
	if want[0] != 100*time.Millisecond || want[1] != 150*time.Millisecond || want[2] != 225*time.Millisecond {
		t.Errorf("the expected sequence itself is wrong: %v", want)
	}
	if len(statuses) != 10 || statuses[0] != "Dial 1/10 failed: retrying" || statuses[9] != "Dial 10/10 failed: retrying" {
		t.Errorf("statuses = %q", statuses)
	}
}

func TestDialErrorLimitZeroDialsOnceAndMinusOneHasNoLimit(t *testing.T) {
	var delays []time.Duration
	calls := 0
	_, err := dialWithRetry(context.Background(), dialer{status: func(string) {}, after: recordDelays(&delays)},
		"Dial proxy", 0, func() (int, error) { calls++; return 0, errors.New("refused") })
	if calls != 1 || err == nil || err.Error() != "after 0 failed attempts: refused" {
		t.Errorf("limit 0: calls=%d err=%v", calls, err)
	}

	var statuses []string
	calls = 0
	delays = nil
	got, err := dialWithRetry(context.Background(), dialer{
		status: func(s string) { statuses = append(statuses, s) }, after: recordDelays(&delays),
	}, "Dial", -1, func() (int, error) {
		calls++
		if calls < 30 {
			return 0, errors.New("refused")
		}
		return 7, nil
	})
	if err != nil || got != 7 || calls != 30 {
		t.Errorf("limit -1: got=%d calls=%d err=%v", got, calls, err)
	}
	if statuses[28] != "Dial 29/inf failed: retrying" {
		t.Errorf("statuses = %q", statuses[28])
	}
	// the delay stops growing at 5 s
	if len(delays) != 29 || delays[10] != 5*time.Second || delays[28] != 5*time.Second || delays[9] >= 5*time.Second {
		t.Errorf("delays = %v", delays)
	}
}

func TestDialStopsRetryingWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err := dialWithRetry(ctx, dialer{status: func(string) {}}, "Dial", 10, func() (int, error) {
		calls++
		cancel()
		return 0, errors.New("refused")
	})
	if calls != 1 || !errors.Is(err, context.Canceled) {
		t.Errorf("calls=%d err=%v", calls, err)
	}
}

func authorizedKey(t *testing.T, pub any) string {
	t.Helper()
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return string(ssh.MarshalAuthorizedKey(k))
}

// Upstream connection.go SSHConfig: HostKeyAlgorithms is exactly the pinned key's type.
func TestHostKeyAlgorithmsAreExactlyThePinnedKeysType(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	for pin, want := range map[string][]string{
		authorizedKey(t, &rsaKey.PublicKey): {"ssh-rsa"},
		authorizedKey(t, edPub):             {"ssh-ed25519"},
	} {
		_, algos, err := hostKeyConfig(resource.PropertyMap{"hostKey": resource.NewStringProperty(pin)})
		if err != nil || !reflect.DeepEqual(algos, want) {
			t.Errorf("%s: algorithms %v (%v), want %v", pin[:12], algos, err, want)
		}
	}
	_, algos, err := hostKeyConfig(resource.PropertyMap{})
	if err != nil || algos != nil {
		t.Errorf("without hostKey: %v %v, want the client's defaults", algos, err)
	}
	_, _, err = hostKeyConfig(resource.PropertyMap{"hostKey": resource.NewStringProperty("nonsense")})
	if err == nil || !strings.HasPrefix(err.Error(), "failed to parse host key: ") {
		t.Errorf("err = %v", err)
	}
}

// An RSA pin against a server that signs only with rsa-sha2-* (OpenSSH >= 8.8) fails the handshake.
func TestAnRSAPinFailsAgainstAServerWithoutSSHRSA(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	modern, err := ssh.NewSignerWithAlgorithms(signer.(ssh.AlgorithmSigner), []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256})
	if err != nil {
		t.Fatal(err)
	}
	server := &ssh.ServerConfig{NoClientAuth: true}
	server.AddHostKey(modern)
	handshake := func(c resource.PropertyMap) error {
		cfg, closer, err := sshConfig(c)
		if err != nil {
			return err
		}
		defer closer()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() {
			if b, err := ln.Accept(); err == nil {
				_, _, _, _ = ssh.NewServerConn(b, server)
				_ = b.Close()
			}
		}()
		a, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer a.Close()
		conn, _, _, err := ssh.NewClientConn(a, ln.Addr().String(), cfg)
		if err == nil {
			_ = conn.Close()
		}
		return err
	}
	t.Setenv("SSH_AUTH_SOCK", "")
	err = handshake(resource.PropertyMap{"user": resource.NewStringProperty("root"),
		"hostKey": resource.NewStringProperty(authorizedKey(t, &rsaKey.PublicKey))})
	if err == nil || !strings.Contains(err.Error(), "no common algorithm for host key") {
		t.Errorf("RSA pin: %v, want no common algorithm for host key", err)
	}
	if err := handshake(resource.PropertyMap{"user": resource.NewStringProperty("root")}); err != nil {
		t.Errorf("no pin (not checked): %v", err)
	}
}

// Upstream connection.go SSHConfig + connection_unix.go: SSH_AUTH_SOCK whenever agentSocketPath is unset.
func TestTheAgentIsUsedWheneverSSHAuthSockIsSet(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(edPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	key := resource.NewStringProperty(string(pem.EncodeToMemory(block)))
	env := func(string) string { return "/run/agent.sock" }
	withKey := resource.PropertyMap{"privateKey": key}
	if got, use := agentSocket(withKey, env); got != "/run/agent.sock" || !use {
		t.Errorf("with a privateKey: %q %v, want SSH_AUTH_SOCK", got, use)
	}
	own := resource.PropertyMap{"privateKey": key, "agentSocketPath": resource.NewStringProperty("/own")}
	if got, use := agentSocket(own, env); got != "/own" || !use {
		t.Errorf("agentSocketPath: %q %v", got, use)
	}
	if got, use := agentSocket(withKey, func(string) string { return "" }); use {
		t.Errorf("an empty SSH_AUTH_SOCK is unset: %q %v", got, use)
	}
	// upstream tests the pointer: a set but empty agentSocketPath is dialled, and fails
	empty := resource.PropertyMap{"privateKey": key, "agentSocketPath": resource.NewStringProperty("")}
	if got, use := agentSocket(empty, env); got != "" || !use {
		t.Errorf("an empty agentSocketPath: %q %v, want it dialled", got, use)
	}
	if _, _, err := sshConfig(empty); err == nil || err.Error() != "dial unix: missing address" {
		t.Errorf("an empty agentSocketPath next to a privateKey: %v", err)
	}

	dead := filepath.Join(t.TempDir(), "agent.sock")
	t.Setenv("SSH_AUTH_SOCK", dead)
	_, _, err = sshConfig(withKey)
	if err == nil || err.Error() != "dial unix "+dead+": connect: no such file or directory" {
		t.Errorf("a dead SSH_AUTH_SOCK next to a privateKey: %v", err)
	}
}

// Upstream util.go LogOutput: a default bufio.Scanner, 64 KiB per line.
func TestTheLineScannerStreamsUpTo64KiBAndThenStopsDraining(t *testing.T) {
	var got []string
	o := newCommandOutput(nil, func(s string) { got = append(got, s) })
	ok := strings.Repeat("a", bufio.MaxScanTokenSize-1)
	if _, err := o.Stdout.Write([]byte("before\n" + ok + "\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Stderr.Write([]byte("err line\n")); err != nil {
		t.Fatal(err)
	}
	written := make(chan error, 1)
	go func() {
		_, err := o.Stdout.Write([]byte(strings.Repeat("x", bufio.MaxScanTokenSize) + "\nafter\n"))
		written <- err
	}()
	<-o.done // the scanner stopped by itself
	if !errors.Is(o.scanErr, bufio.ErrTooLong) {
		t.Errorf("scanner error %v, want bufio.ErrTooLong", o.scanErr)
	}
	if len(got) != 3 || got[0] != "before" || got[1] != ok || got[2] != "err line" {
		t.Errorf("streamed %d lines, want before, the 64 KiB - 1 line, err line", len(got))
	}
	select {
	case err := <-written:
		t.Fatalf("the write after the long line returned (%v): the pipe is still drained", err)
	case <-time.After(300 * time.Millisecond):
	}
	_ = o.lines.Close() // only to end this test's writer: upstream never closes it, so the command hangs
	<-written
}

func TestLoggingSelectsTheStreams(t *testing.T) {
	for logging, want := range map[string][]string{
		logNone: nil, logStdout: {"out"}, logStderr: {"err"}, logStdoutAndStderr: {"out", "err"},
	} {
		var got []string
		o := newCommandOutput(&logging, func(s string) { got = append(got, s) })
		_, _ = o.Stdout.Write([]byte("out\n"))
		_, _ = o.Stderr.Write([]byte("err\n"))
		// no scanner in the way with none: a long line is only captured
		if logging == logNone {
			_, _ = o.Stdout.Write([]byte(strings.Repeat("x", 200000) + "\n"))
		}
		o.finish()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("logging %s: streamed %q, want %q", logging, got, want)
		}
		if !strings.HasPrefix(o.stdout.String(), "out\n") || o.stderr.String() != "err\n" {
			t.Errorf("logging %s: outputs not captured", logging)
		}
	}
}

// Upstream commandOutputs.go: "%w: running %q:\n<stdout and stderr interleaved>".
func TestTheErrorQuotesTheCommandAndInterleavesTheOutput(t *testing.T) {
	o := newCommandOutput(nil, func(string) {})
	_, _ = o.Stdout.Write([]byte("one\n"))
	_, _ = o.Stderr.Write([]byte("two\n"))
	_, _ = o.Stdout.Write([]byte("three\n"))
	o.finish()
	exit := errors.New("Process exited with status 3")
	err := commandError(exit, "echo 'a b'; exit 3", o.both.String())
	if err.Error() != "Process exited with status 3: running \"echo 'a b'; exit 3\":\none\ntwo\nthree\n" || !errors.Is(err, exit) {
		t.Errorf("err = %q", err)
	}
}

func TestEngineAddressIsTheFirstArgumentAfterTheFlags(t *testing.T) {
	for args, want := range map[string]string{
		"127.0.0.1:4000":                              "127.0.0.1:4000",
		"--logtostderr -v=9 127.0.0.1:4000":           "127.0.0.1:4000",
		"--tracing file:///tmp/t.json 127.0.0.1:4000": "127.0.0.1:4000",
		"-version": "",
	} {
		if got := engineAddress(strings.Fields(args)); got != want {
			t.Errorf("%q: %q, want %q", args, got, want)
		}
	}
}

// pulumi-go-provider DefaultCheck with upstream's SetDefault values; the connection stays secret.
func TestCheckSetsTheConnectionDefaults(t *testing.T) {
	p := &commandProvider{}
	news, err := plugin.MarshalProperties(resource.PropertyMap{
		"create": resource.NewStringProperty("true"),
		"connection": resource.MakeSecret(resource.NewObjectProperty(resource.PropertyMap{
			"host":  resource.NewStringProperty("198.18.0.2"),
			"port":  resource.NewNumberProperty(2222),
			"proxy": resource.NewObjectProperty(resource.PropertyMap{"host": resource.NewStringProperty("jump")}),
		})),
	}, plugin.MarshalOptions{KeepSecrets: true})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := p.Check(context.Background(), &pulumirpc.CheckRequest{
		Urn: "urn:pulumi:s::p::command:remote:Command::c", News: news,
	})
	if err != nil || len(resp.GetFailures()) > 0 {
		t.Fatal(err, resp.GetFailures())
	}
	in, err := plugin.UnmarshalProperties(resp.GetInputs(), plugin.MarshalOptions{KeepSecrets: true})
	if err != nil {
		t.Fatal(err)
	}
	if !in["connection"].IsSecret() {
		t.Fatal("connection is no longer secret")
	}
	c := in["connection"].SecretValue().Element.ObjectValue()
	want := map[string]any{"host": "198.18.0.2", "port": 2222.0, "user": "root", "dialErrorLimit": 10.0, "perDialTimeout": 15.0}
	for k, v := range want {
		if got := c[resource.PropertyKey(k)].V; got != v {
			t.Errorf("connection.%s = %v, want %v", k, got, v)
		}
	}
	px := c["proxy"].ObjectValue()
	if px["port"].NumberValue() != 22 || px["user"].StringValue() != "root" || px["dialErrorLimit"].NumberValue() != 10 {
		t.Errorf("proxy = %v", px)
	}
}

// pulumi-go-provider middleware/cancel: Cancel cancels the contexts of the running operations.
func TestCancelCancelsTheRunningOperations(t *testing.T) {
	p := &commandProvider{ops: operations{cancels: map[int]context.CancelFunc{}}}
	ctx, done := p.ops.start(context.Background(), 0)
	defer done()
	if _, err := p.Cancel(context.Background(), &emptypb.Empty{}); err != nil {
		t.Fatal(err)
	}
	if ctx.Err() == nil {
		t.Error("the operation's context is not cancelled")
	}
	ctx2, done2 := p.ops.start(context.Background(), 0)
	defer done2()
	if ctx2.Err() != nil {
		t.Error("an operation started after Cancel is cancelled too")
	}
}
