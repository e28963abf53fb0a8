// Copyright 2026 metrics-aggregation authors.

package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

// runPluginStream is the engine's end of RunPlugin: stdout collected as lines, the exit code kept.
type runPluginStream struct {
	grpc.ServerStream
	ctx    context.Context
	mu     sync.Mutex
	stdout strings.Builder
	stderr strings.Builder
	lines  chan string // the first stdout line, once
	sent   bool
	code   int32
	exited bool
}

func (s *runPluginStream) Context() context.Context { return s.ctx }

func (s *runPluginStream) Send(r *pulumirpc.RunPluginResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch o := r.GetOutput().(type) {
	case *pulumirpc.RunPluginResponse_Stdout:
		s.stdout.Write(o.Stdout)
		if line, _, ok := strings.Cut(s.stdout.String(), "\n"); ok && !s.sent {
			s.lines <- line
			s.sent = true
		}
	case *pulumirpc.RunPluginResponse_Stderr:
		s.stderr.Write(o.Stderr)
	case *pulumirpc.RunPluginResponse_Exitcode:
		s.code, s.exited = o.Exitcode, true
	}
	return nil
}

// fakePack is the policy pack's analyzer: it records the ConfigureStack the proxy forwards.
type fakePack struct {
	pulumirpc.UnimplementedAnalyzerServer
	configured chan *pulumirpc.AnalyzerStackConfigureRequest
}

func (f *fakePack) ConfigureStack(_ context.Context, req *pulumirpc.AnalyzerStackConfigureRequest) (*pulumirpc.AnalyzerStackConfigureResponse, error) {
	f.configured <- req
	return &pulumirpc.AnalyzerStackConfigureResponse{}, nil
}

// upstream pulumi sdk/python/cmd/pulumi-language-python/main.go RunPlugin with sdk/policy_proxy.go: the
// engine gets the proxy's port, the pack starts only after ConfigureStack, with PULUMI_ORGANIZATION,
// PULUMI_PROJECT, PULUMI_STACK, PULUMI_DRY_RUN and PULUMI_CONFIG, then the request's env; the proxy
// forwards ConfigureStack to the pack.
func TestPolicyPackStartsAfterConfigureStackWithTheStacksEnvironment(t *testing.T) {
	dir := t.TempDir()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pack := &fakePack{configured: make(chan *pulumirpc.AnalyzerStackConfigureRequest, 1)}
	srv := grpc.NewServer()
	pulumirpc.RegisterAnalyzerServer(srv, pack)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	// The pack's "python": writes its environment and arguments, announces the fake analyzer's port.
	bin := filepath.Join(dir, "venv", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nenv > \"$PACK_ENV_OUT\"\necho \"$@\" > \"$PACK_ENV_OUT.args\"\necho " +
		fmt.Sprint(lis.Addr().(*net.TCPAddr).Port) + "\necho after-the-port\n"
	if err := os.WriteFile(filepath.Join(bin, "python"), []byte(script), 0o755); err != nil { //nolint:gosec // a test executable
		t.Fatal(err)
	}
	out := filepath.Join(dir, "env.out")
	opts, _ := structpb.NewStruct(map[string]any{"virtualenv": "venv"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream := &runPluginStream{ctx: ctx, lines: make(chan string, 1)}
	done := make(chan error, 1)
	go func() {
		done <- (&pythonHost{}).RunPlugin(&pulumirpc.RunPluginRequest{
			Kind: "analyzer", Args: []string{"127.0.0.1:1"}, Env: []string{"PACK_ENV_OUT=" + out, "PULUMI_PROJECT=from-request"},
			Info: &pulumirpc.ProgramInfo{RootDirectory: dir, ProgramDirectory: dir, Options: opts},
		}, stream)
	}()

	var port string
	select {
	case port = <-stream.lines:
	case err := <-done:
		t.Fatalf("RunPlugin ended before announcing the proxy: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(out); err == nil {
		t.Fatal("the pack started before ConfigureStack")
	}
	conn, err := grpc.NewClient("127.0.0.1:"+port, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cfg := &pulumirpc.AnalyzerStackConfigureRequest{
		Stack: "prod", Project: "metrics-aggregation", Organization: "acme", DryRun: true,
		Config: map[string]string{"metrics-aggregation:pki": `{"keyAlgorithm":"ED25519"}`},
	}
	if _, err := pulumirpc.NewAnalyzerClient(conn).ConfigureStack(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := <-pack.configured; got.GetStack() != "prod" {
		t.Fatalf("the proxy forwarded %v", got)
	}
	// The proxy copies the pack's output after its port on its own goroutine, which may still be at it.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		stream.mu.Lock()
		exited, code, stdout, stderr := stream.exited, stream.code, stream.stdout.String(), stream.stderr.String()
		stream.mu.Unlock()
		if exited && code == 0 && strings.Contains(stdout, "after-the-port") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exit %v/%d, stdout %q, stderr %q", exited, code, stdout, stderr)
		}
	}

	env := map[string]string{}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	want := map[string]string{
		"PULUMI_STACK": "prod", "PULUMI_ORGANIZATION": "acme", "PULUMI_DRY_RUN": "true",
		"PULUMI_CONFIG":  `{"metrics-aggregation:pki":"{\"keyAlgorithm\":\"ED25519\"}"}`,
		"PULUMI_PROJECT": "from-request", // the request's env comes last and wins
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if _, ok := env["PULUMI_CONFIG_SECRET_KEYS"]; ok {
		t.Error("upstream gives a policy pack no PULUMI_CONFIG_SECRET_KEYS")
	}
	if !strings.HasPrefix(env["PATH"], bin+":") || env["VIRTUAL_ENV"] != filepath.Join(dir, "venv") {
		t.Errorf("not the activated virtualenv: PATH=%q VIRTUAL_ENV=%q", env["PATH"], env["VIRTUAL_ENV"])
	}
	args, _ := os.ReadFile(out + ".args")
	if strings.TrimSpace(string(args)) != "-u -m pulumi.policy 127.0.0.1:1 "+dir {
		t.Errorf("pack arguments %q", args)
	}
}

// packEnv without a ConfigureStack (nil) sets nothing, and empty values are left out, as upstream's
// maybeAppendEnv.
func TestPackEnvLeavesOutWhatTheEngineDidNotSend(t *testing.T) {
	if env, err := packEnv(nil); err != nil || len(env) != 0 {
		t.Fatalf("nil config: %v %v", env, err)
	}
	env, err := packEnv(&pulumirpc.AnalyzerStackConfigureRequest{Stack: "dev", Project: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(env, " ") != "PULUMI_PROJECT=p PULUMI_STACK=dev PULUMI_DRY_RUN=false" {
		t.Fatalf("env %v", env)
	}
}
