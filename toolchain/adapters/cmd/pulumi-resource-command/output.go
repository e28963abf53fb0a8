// Copyright 2026 metrics-aggregation authors.

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The values of `logging` (upstream remote/logging.go). Unset means stdout and stderr.
const (
	logStdout          = "stdout"
	logStderr          = "stderr"
	logStdoutAndStderr = "stdoutAndStderr"
	logNone            = "none"
)

func shouldLogStdout(logging *string) bool {
	return logging == nil || *logging == logStdout || *logging == logStdoutAndStderr
}

func shouldLogStderr(logging *string) bool {
	return logging == nil || *logging == logStderr || *logging == logStdoutAndStderr
}

// lockedBuffer: stdout and stderr are copied by two goroutines of the SSH session; the combined buffer
// of the error text takes both.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// commandOutput is where a run's output goes, as in upstream's remote/commandOutputs.go: stdout and
// stderr each into its own buffer (the outputs) and both into one (the error text), and the streams
// that `logging` selects through one pipe into a line scanner that sends every line as a status
// message (util.go LogOutput).
//
// The scanner is a default bufio.Scanner: a line over 64 KiB stops it with bufio.ErrTooLong, nobody
// reads the pipe any more, the next write into it blocks, and with it the SSH session's copy of the
// output, so session.Run never returns: the command hangs (pulumi-command issue #201). That is what
// upstream does, and what this reproduces.
type commandOutput struct {
	Stdout, Stderr io.Writer
	stdout, stderr bytes.Buffer
	both           lockedBuffer
	pipe           *io.PipeWriter
	lines          *io.PipeReader
	done           chan struct{}
	scanErr        error
}

func newCommandOutput(logging *string, status func(string)) *commandOutput {
	o := &commandOutput{done: make(chan struct{})}
	r, w := io.Pipe()
	o.pipe, o.lines = w, r
	outs := []io.Writer{&o.stdout, &o.both}
	if shouldLogStdout(logging) {
		outs = append(outs, w)
	}
	errs := []io.Writer{&o.stderr, &o.both}
	if shouldLogStderr(logging) {
		errs = append(errs, w)
	}
	o.Stdout, o.Stderr = io.MultiWriter(outs...), io.MultiWriter(errs...)
	go func() {
		defer close(o.done)
		scanner := bufio.NewScanner(r)
		for scanner.Scan() {
			status(scanner.Text())
		}
		o.scanErr = scanner.Err()
	}()
	return o
}

// finish ends the stream after the command: the scanner reads to the end and stops.
func (o *commandOutput) finish() {
	_ = o.pipe.Close()
	<-o.done
}

// engineLog sends log messages to the engine, as pulumi-go-provider's Logger does through the host
// client the provider was started with (logging.go hostSink; pulumi sdk go/pulumi/provider/host.go).
type engineLog struct {
	client pulumirpc.EngineClient
}

// engineAddress is the engine's address among the plugin's arguments: the engine starts a provider with
// its flags (--logtostderr, -v=N, --tracing <endpoint>) and then the address.
func engineAddress(args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--tracing" || a == "-tracing":
			i++
		case strings.HasPrefix(a, "-"):
		default:
			return a
		}
	}
	return ""
}

func newEngineLog(addr string) *engineLog {
	if addr == "" {
		return &engineLog{}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-resource-command: cannot connect to the engine at %s: %v\n", addr, err)
		return &engineLog{}
	}
	return &engineLog{client: pulumirpc.NewEngineClient(conn)}
}

// log sends one message about urn; ephemeral messages are status messages (the progress display's
// Info column, not the final output). When the engine cannot take it, it goes to stderr, as upstream's
// slog fallback.
func (e *engineLog) log(ctx context.Context, sev pulumirpc.LogSeverity, urn, msg string, ephemeral bool) {
	if e.client != nil {
		_, err := e.client.Log(ctx, &pulumirpc.LogRequest{
			Severity: sev, Message: strings.ToValidUTF8(msg, "\uFFFD"), Urn: urn, Ephemeral: ephemeral,
		})
		if err == nil {
			return
		}
	}
	fmt.Fprintf(os.Stderr, "%s %s: %s\n", sev, urn, msg)
}

// logger binds the engine log to one resource and request.
type logger struct {
	ctx context.Context
	eng *engineLog
	urn string
}

func (l logger) infoStatus(msg string) {
	l.eng.log(l.ctx, pulumirpc.LogSeverity_INFO, l.urn, msg, true)
}
func (l logger) warning(msg string) {
	l.eng.log(l.ctx, pulumirpc.LogSeverity_WARNING, l.urn, msg, false)
}
func (l logger) error(msg string) { l.eng.log(l.ctx, pulumirpc.LogSeverity_ERROR, l.urn, msg, false) }
