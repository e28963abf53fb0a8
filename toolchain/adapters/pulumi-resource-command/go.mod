// Project-written stand-in for the `command` Pulumi provider (see main.go for why and what it covers).
// Built by toolchain/build.sh, which copies this directory into the toolchain work dir and runs
// `go mod tidy` there.
module metrics-aggregation/toolchain/pulumi-resource-command

go 1.26.6

require (
	github.com/pulumi/pulumi/sdk/v3 v3.274.1
	golang.org/x/crypto v0.58.0
	google.golang.org/grpc v1.83.2
	google.golang.org/protobuf v1.36.11
)
