// The project-written Pulumi plugins (metrics-aggregation): one module, one main package per plugin
// under cmd/, the serving and provider code they share under internal/. toolchain/build.sh copies
// go.mod and the *.go files into the toolchain work dir, runs `go mod tidy` there (no go.sum in git)
// and builds each cmd/ from that one copy. The upstream plugins are not served by the Go module
// proxy: see toolchain/versions.env and the package comment of each cmd/.
module metrics-aggregation/toolchain/adapters

go 1.26.6

require (
	github.com/pulumi/pulumi/sdk/v3 v3.274.1
	golang.org/x/crypto v0.58.0
	google.golang.org/grpc v1.83.2
	google.golang.org/protobuf v1.36.11
)
