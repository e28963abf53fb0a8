// Project-written adapter (metrics-aggregation): a small Python language host for the
// Pulumi engine. See main.go for why it exists. Built by toolchain/build.sh, which
// copies this directory into the toolchain work dir and runs `go mod tidy` there.
module metrics-aggregation/toolchain/pulumi-language-python

go 1.26.6

require (
	github.com/pulumi/pulumi/sdk/v3 v3.274.1
	google.golang.org/grpc v1.83.2
	google.golang.org/protobuf v1.36.11
)
