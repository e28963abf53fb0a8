// Copyright 2026 metrics-aggregation authors.

// Package serve is the process side that every adapter shares with the others: the version stamp,
// the -version flag and the engine's plugin handshake. The engine starts a plugin, reads the port of
// its gRPC server from the first line of the plugin's stdout, and dials 127.0.0.1:<port>.
package serve

import (
	"fmt"
	"os"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	"google.golang.org/grpc"
)

// Version is stamped by toolchain/build.sh
// (-X metrics-aggregation/toolchain/adapters/internal/serve.Version=...) with the release a binary
// stands in for: the engine looks providers up by exact version, and GetPluginInfo reports it.
var Version = "0.0.0-dev"

// IsVersionFlag reports whether arg asks for the version, spelt as the upstream plugins accept it.
func IsVersionFlag(arg string) bool {
	return arg == "-version" || arg == "--version"
}

// Main is the main of a plugin that takes no flags of its own: -version anywhere in the arguments
// prints Version, any other argument (the engine address, -tracing=…) is ignored, as the project's
// providers need none of them.
func Main(name string, register func(grpc.ServiceRegistrar)) {
	for _, a := range os.Args[1:] {
		if IsVersionFlag(a) {
			fmt.Println(Version)
			return
		}
	}
	Serve(name, register)
}

// Serve runs the plugin's gRPC server until the engine stops it and exits with status 1 when it
// fails. rpcutil is what the upstream plugins serve with: 127.0.0.1 on a free port, the SDK's message
// size limit, and the gRPC health and reflection services; register adds the plugin's own service.
// name prefixes the error messages.
func Serve(name string, register func(grpc.ServiceRegistrar)) {
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			register(srv)
			return nil
		},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: could not start the RPC server: %v\n", name, err)
		os.Exit(1)
	}
	// The handshake: the engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "%s: RPC server stopped: %v\n", name, err)
		os.Exit(1)
	}
}
