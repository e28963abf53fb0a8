package serve

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The handshake is about a process's stdout and exit, so the test binary runs itself as the plugin.
const childEnv = "SERVE_TEST_AS_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		Version = "9.8.7"
		Main("serve-test", func(grpc.ServiceRegistrar) {})
		return
	}
	os.Exit(m.Run())
}

func plugin(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	return cmd
}

func TestVersionFlagPrintsTheStampAndExits(t *testing.T) {
	for _, flag := range []string{"-version", "--version"} {
		out, err := plugin(t, "127.0.0.1:1", flag).Output()
		if err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		if string(out) != "9.8.7\n" {
			t.Errorf("%s printed %q, want the stamped version", flag, out)
		}
	}
}

func TestHandshakePrintsAPortThatServesHealth(t *testing.T) {
	cmd := plugin(t, "127.0.0.1:1", "-tracing=ignored")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no first line on stdout: %v", err)
	}
	port, err := strconv.Atoi(strings.TrimSuffix(line, "\n"))
	if err != nil || port <= 0 {
		t.Fatalf("first stdout line %q is not a port", line)
	}
	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("health check on port %d: %v", port, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health status %v, want SERVING", resp.GetStatus())
	}
}
