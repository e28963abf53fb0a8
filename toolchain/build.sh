#!/usr/bin/env bash
# toolchain/build.sh: builds the project's Pulumi/Kubernetes toolchain from Go modules only
# (the go command + the Go module proxy), into a cache dir outside the repo keyed by
# toolchain/versions.env. Nothing third-party is written into the repo.
#
# Usage:
#   bash toolchain/build.sh build [component...]   build what is missing (default: all)
#   bash toolchain/build.sh bin-dir                print the bin dir
#   bash toolchain/build.sh env                    install the providers into PULUMI_HOME's plugin
#                                                  cache (idempotent) and print shell exports:
#                                                  eval "$(bash toolchain/build.sh env)"
#   bash toolchain/build.sh install-plugins        only the plugin-cache step of `env`
#   bash toolchain/build.sh list                   components and their state
#   bash toolchain/build.sh key                    print the cache key
#   bash toolchain/build.sh prune                  delete the cache dirs of other keys
# Components: command pulumi python tls kubernetes etcd metrics-server kube-apiserver kubectl
#             kube-controller-manager
#
# Environment: TOOLCHAIN_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/metrics-aggregation/toolchain).
# GOMODCACHE/GOCACHE are left at the go command's defaults so all builds share downloads.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$HERE/.." && pwd)
VERSIONS_FILE=$HERE/versions.env
# shellcheck source=versions.env disable=SC1091
. "$VERSIONS_FILE"

KEY=$(sha256sum "$VERSIONS_FILE" | cut -c1-12)
CACHE_ROOT=${TOOLCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/metrics-aggregation/toolchain}
TC_DIR=$CACHE_ROOT/$KEY
BIN=$TC_DIR/bin             # on PATH: pulumi, language host, etcd, kube-apiserver, kubectl, metrics-server
PROVIDERS=$TC_DIR/providers # not on PATH: installed into PULUMI_HOME's plugin cache instead
WORK=$TC_DIR/work           # generated wrapper modules
STAMPS=$TC_DIR/stamps
LOGS=$TC_DIR/logs
LOG=$TC_DIR/build.log

ALL_COMPONENTS=(command pulumi python tls kubernetes etcd metrics-server kube-apiserver kubectl kube-controller-manager)

export CGO_ENABLED=0
export GOFLAGS=-mod=mod
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

# ------------------------------------------------------------------ helpers

say() {
	local line
	line="[toolchain] $(date -u +%H:%M:%S) $*"
	printf '%s\n' "$line" >&2
	if [[ -d $TC_DIR ]]; then printf '%s\n' "$line" >>"$LOG"; fi
}

die() {
	printf '[toolchain] FAILED: %s\n' "$*" >&2
	if [[ -d $TC_DIR ]]; then printf '[toolchain] FAILED: %s\n' "$*" >>"$LOG"; fi
	exit 1
}

# fail MESSAGE: inside a recipe (a subshell): report and stop the recipe; build_one prints FAILED.
fail() {
	say "error: $*"
	exit 1
}

# run_logged COMPONENT CMD...: runs CMD with its output in logs/COMPONENT.log.
run_logged() {
	local comp=$1
	shift
	printf '+ %s\n' "$*" >>"$LOGS/$comp.log"
	if ! "$@" >>"$LOGS/$comp.log" 2>&1; then
		tail -n 25 "$LOGS/$comp.log" >&2 || true
		fail "$comp: '$*' failed"
	fi
}

check_go() {
	command -v go >/dev/null 2>&1 || die "go not found on PATH (need go >= $GO_MIN_VERSION)"
	local have
	have=$(go env GOVERSION)
	have=${have#go}
	if [[ $(printf '%s\n%s\n' "$GO_MIN_VERSION" "$have" | sort -V | head -n1) != "$GO_MIN_VERSION" ]]; then
		die "go $have is older than $GO_MIN_VERSION (GOTOOLCHAIN=$GOTOOLCHAIN)"
	fi
}

# mod_dir MODULE@VERSION: downloads a module and prints its read-only module-cache dir.
mod_dir() {
	local json
	json=$(go mod download -json "$1" 2>/dev/null || true)
	python3 -c 'import json,sys; d=json.loads(sys.stdin.read() or "{}"); print(d.get("Dir","") if not d.get("Error") else "")' <<<"$json"
}

# served COMPONENT MODULE@VERSION: true when the proxy serves it; else the error text goes to
# logs/COMPONENT.unavailable.
served() {
	local json err
	json=$(go mod download -json "$2" 2>/dev/null || true)
	err=$(python3 -c 'import json,sys; d=json.loads(sys.stdin.read() or "{}"); print(" ".join(d["Error"].split()) if d.get("Error") else ("" if d.get("Dir") else "no answer"))' <<<"$json")
	[[ -z $err ]] && return 0
	printf '%s\n' "$err" >"$LOGS/$1.unavailable"
	return 1
}

# new_wrapper NAME: a fresh wrapper module dir under $WORK; prints its path.
new_wrapper() {
	local dir=$WORK/$1
	rm -rf "$dir"
	mkdir -p "$dir"
	printf '%s\n' "$dir"
}

# tools_file DIR PKG...: a tools.go that pins main packages for `go mod tidy` (never compiled).
tools_file() {
	local dir=$1 pkg
	shift
	{
		printf '//go:build tools\n\npackage tools\n\nimport (\n'
		for pkg in "$@"; do printf '\t_ "%s"\n' "$pkg"; done
		printf ')\n'
	} >"$dir/tools.go"
}

# set_json_version SRC DST VERSION: DST = SRC with .version set (what upstream's generate.go does).
set_json_version() {
	python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
src, dst, version = sys.argv[1:4]
with open(src) as f:
    doc = json.load(f)
if version:
    doc["version"] = version
with open(dst, "w") as f:
    json.dump(doc, f, separators=(",", ":"))
EOF
}

# copy_module DIR DEST: a writable copy of a module-cache dir.
copy_module() {
	rm -rf "$2"
	cp -R "$1" "$2"
	chmod -R u+w "$2"
}

# The project-written plugins: one Go module, one main package per plugin under cmd/ (README.md there).
ADAPTERS=$HERE/adapters
ADAPTERS_MODULE=metrics-aggregation/toolchain/adapters

# adapter_sources: the adapter module's go.mod and *.go files, relative to $ADAPTERS, sorted so that
# the recipe hash does not depend on the directory order.
adapter_sources() {
	(cd "$ADAPTERS" && find . -type f \( -name go.mod -o -name '*.go' \) | LC_ALL=C sort)
}

# recipe hash of a component: versions.env is in the cache key already; the adapters (python, tls,
# command) add their whole module's sources, names included, as any file may go into any of them.
recipe_hash() {
	case $1 in
	python | tls | command) (cd "$ADAPTERS" && adapter_sources | xargs -d '\n' sha256sum) | sha256sum | cut -c1-12 ;;
	*) printf '%s\n' "$KEY" ;;
	esac
}

# outputs of a component (relative to $TC_DIR)
outputs() {
	case $1 in
	pulumi) echo bin/pulumi ;;
	python) echo bin/pulumi-language-python bin/pulumi-language-python-exec bin/pulumi-resource-pulumi-python ;;
	kubernetes) echo providers/pulumi-resource-kubernetes ;;
	command) echo providers/pulumi-resource-command ;;
	tls) echo providers/pulumi-resource-tls ;;
	etcd) echo bin/etcd ;;
	metrics-server) echo bin/metrics-server ;;
	kube-apiserver) echo bin/kube-apiserver ;;
	kubectl) echo bin/kubectl ;;
	kube-controller-manager) echo bin/kube-controller-manager ;;
	*) return 1 ;;
	esac
}

version_of() {
	case $1 in
	pulumi | python) echo "$PULUMI_TARGET_VERSION" ;;
	kubernetes) echo "$K8S_PROVIDER_TARGET_VERSION" ;;
	command) echo "$COMMAND_TARGET_VERSION" ;;
	tls) echo "$TLS_TARGET_VERSION" ;;
	etcd) echo "$ETCD_VERSION" ;;
	metrics-server) echo "$METRICS_SERVER_VERSION" ;;
	kube-apiserver | kubectl | kube-controller-manager) echo "$KUBERNETES_VERSION" ;;
	esac
}

is_built() {
	local comp=$1 out
	for out in $(outputs "$comp"); do
		[[ -x $TC_DIR/$out ]] || return 1
	done
	[[ -f $STAMPS/$comp && $(cat "$STAMPS/$comp") == "$(recipe_hash "$comp")" ]]
}

mark_built() { recipe_hash "$1" >"$STAMPS/$1"; }

go_build() { # go_build COMPONENT DIR OUT LDFLAGS TAGS PKG
	local comp=$1 dir=$2 out=$3 ldflags=$4 tags=$5 pkg=$6
	(cd "$dir" && run_logged "$comp" go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out.tmp" "$pkg")
	mv -f "$out.tmp" "$out"
}

# ------------------------------------------------------------------ recipes

build_pulumi() {
	local dir
	dir=$(new_wrapper pulumi)
	cat >"$dir/go.mod" <<EOF
module metrics-aggregation/toolchain/pulumi

go $GO_MIN_VERSION

require (
	github.com/pulumi/pulumi/pkg/v3 $PULUMI_PKG_VERSION
	github.com/pulumi/pulumi/sdk/v3 $PULUMI_SDK_VERSION
)

replace github.com/atotto/clipboard => ${PULUMI_CLIPBOARD_REPLACE/@/ }
EOF
	tools_file "$dir" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
	(cd "$dir" && run_logged pulumi go mod tidy)
	go_build pulumi "$dir" "$BIN/pulumi" \
		"-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$PULUMI_STAMP" \
		"$PULUMI_BUILD_TAGS" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
}

# adapters_wrapper COMPONENT: a copy of the adapter module in $WORK, tidied (git has no go.sum: tidy
# writes it there, as for the other wrappers), vetted and tested; made once per recipe hash, for
# python, tls and command together. Prints its path.
adapters_wrapper() {
	local comp=$1 dir=$WORK/adapters ready file
	ready=$(recipe_hash "$comp")
	if [[ -f $dir/.ready && $(cat "$dir/.ready") == "$ready" ]]; then
		printf '%s\n' "$dir"
		return
	fi
	dir=$(new_wrapper adapters)
	# Called as $(adapters_wrapper …), where bash does not apply `set -e`: every step says || exit.
	while IFS= read -r file; do
		install -D -m 0644 "$ADAPTERS/$file" "$dir/$file" || fail "$comp: cannot copy $file"
	done < <(adapter_sources)
	# The adapters are the project's own code: their vet and tests run wherever they are built.
	(cd "$dir" && run_logged "$comp" go mod tidy && run_logged "$comp" go vet ./... &&
		run_logged "$comp" go test ./...) || exit 1
	printf '%s\n' "$ready" >"$dir/.ready"
	printf '%s\n' "$dir"
}

# adapter_ldflags VERSION: the version stamp of an adapter binary (package serve holds it).
adapter_ldflags() { printf '%s\n' "-s -w -X $ADAPTERS_MODULE/internal/serve.Version=$1"; }

build_python() {
	local dir sdk
	dir=$(adapters_wrapper python)
	go_build python "$dir" "$BIN/pulumi-language-python" "$(adapter_ldflags "$PULUMI_STAMP")" \
		"$PULUMI_BUILD_TAGS" ./cmd/pulumi-language-python
	sdk=$(mod_dir "github.com/pulumi/pulumi/sdk/v3@$PULUMI_EXEC_SDK_VERSION")
	[[ -n $sdk ]] || fail "python: cannot download github.com/pulumi/pulumi/sdk/v3@$PULUMI_EXEC_SDK_VERSION"
	install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$BIN/pulumi-language-python-exec"
	# Bundled resource plugin for Python dynamic providers (pulumi.dynamic): a sh shim, found next to pulumi.
	install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$BIN/pulumi-resource-pulumi-python"
}

build_kubernetes() {
	local dir src cmd
	src=$(mod_dir "$K8S_PROVIDER_MODULE@$K8S_PROVIDER_PSEUDO")
	[[ -n $src ]] || fail "kubernetes: $K8S_PROVIDER_MODULE@$K8S_PROVIDER_PSEUDO is not served"
	dir=$(new_wrapper pulumi-resource-kubernetes)
	copy_module "$src" "$dir/provider"
	cmd=$dir/provider/cmd/pulumi-resource-kubernetes
	# Generated, gitignored upstream: made from the module's committed files like generate.go does.
	set_json_version "$cmd/schema.json" "$cmd/schema-embed.json" "$K8S_PROVIDER_TARGET_VERSION"
	set_json_version "$cmd/terraform-mapping.json" "$cmd/terraform-mapping-embed.json" ""
	cat >"$dir/go.mod" <<EOF
module metrics-aggregation/toolchain/pulumi-resource-kubernetes

go $GO_MIN_VERSION

require $K8S_PROVIDER_MODULE $K8S_PROVIDER_PSEUDO

replace $K8S_PROVIDER_MODULE => ./provider

// provider/go.mod: replace github.com/pulumi/pulumi-kubernetes/sdk/v4 => ../sdk
replace github.com/pulumi/pulumi-kubernetes/sdk/v4 => github.com/pulumi/pulumi-kubernetes/sdk/v4 $K8S_PROVIDER_SDK_VERSION
EOF
	tools_file "$dir" "$K8S_PROVIDER_MODULE/cmd/pulumi-resource-kubernetes"
	(cd "$dir" && run_logged kubernetes go mod tidy)
	go_build kubernetes "$dir" "$PROVIDERS/pulumi-resource-kubernetes" \
		"-s -w -X $K8S_PROVIDER_MODULE/pkg/version.Version=v$K8S_PROVIDER_TARGET_VERSION" \
		"" "$K8S_PROVIDER_MODULE/cmd/pulumi-resource-kubernetes"
}

build_command() {
	local dir
	dir=$(new_wrapper pulumi-resource-command)
	if served command "$COMMAND_PROVIDER_MODULE@$COMMAND_PROVIDER_PSEUDO"; then
		# Upstream release (plain module, no replace directives).
		cat >"$dir/go.mod" <<EOF
module metrics-aggregation/toolchain/pulumi-resource-command

go $GO_MIN_VERSION

require $COMMAND_PROVIDER_MODULE $COMMAND_PROVIDER_PSEUDO
EOF
		tools_file "$dir" "$COMMAND_PROVIDER_MODULE/cmd/pulumi-resource-command"
		(cd "$dir" && run_logged command go mod tidy)
		go_build command "$dir" "$PROVIDERS/pulumi-resource-command" \
			"-s -w -X $COMMAND_PROVIDER_MODULE/pkg/version.Version=v$COMMAND_TARGET_VERSION" \
			"" "$COMMAND_PROVIDER_MODULE/cmd/pulumi-resource-command"
		return
	fi
	say "command: upstream not served ($(cat "$LOGS/command.unavailable")); building the project's stand-in toolchain/adapters/cmd/pulumi-resource-command"
	dir=$(adapters_wrapper command)
	go_build command "$dir" "$PROVIDERS/pulumi-resource-command" "$(adapter_ldflags "$COMMAND_TARGET_VERSION")" "" \
		./cmd/pulumi-resource-command
}

build_tls() {
	# The upstream provider is not served by the Go module proxy (see versions.env): build the
	# project's stand-in, stamped with the pulumi_tls SDK version for the exact-version plugin lookup.
	local dir
	dir=$(adapters_wrapper tls)
	go_build tls "$dir" "$PROVIDERS/pulumi-resource-tls" "$(adapter_ldflags "$TLS_TARGET_VERSION")" "" ./cmd/pulumi-resource-tls
}

build_etcd() {
	local dir
	dir=$(new_wrapper etcd)
	cat >"$dir/go.mod" <<EOF
module metrics-aggregation/toolchain/etcd

go $GO_MIN_VERSION

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
	tools_file "$dir" go.etcd.io/etcd/server/v3
	(cd "$dir" && run_logged etcd go mod tidy)
	go_build etcd "$dir" "$BIN/etcd" "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
		"" go.etcd.io/etcd/server/v3
}

build_metrics_server() {
	local dir pkg=k8s.io/client-go/pkg/version
	dir=$(new_wrapper metrics-server)
	cat >"$dir/go.mod" <<EOF
module metrics-aggregation/toolchain/metrics-server

go $GO_MIN_VERSION

require sigs.k8s.io/metrics-server $METRICS_SERVER_VERSION
EOF
	tools_file "$dir" sigs.k8s.io/metrics-server/cmd/metrics-server
	(cd "$dir" && run_logged metrics-server go mod tidy)
	go_build metrics-server "$dir" "$BIN/metrics-server" \
		"-s -w -X $pkg.gitVersion=$METRICS_SERVER_VERSION -X $pkg.gitCommit=unknown -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
		"" sigs.k8s.io/metrics-server/cmd/metrics-server
}

# kube-apiserver, kubectl and kube-controller-manager share one wrapper module.
KUBERNETES_MAINS=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
	k8s.io/kubernetes/cmd/kube-controller-manager)
kubernetes_wrapper() {
	local dir=$WORK/kubernetes gomod staging gover ready
	ready="$KEY ${KUBERNETES_MAINS[*]}"
	if [[ -f $dir/.ready && $(cat "$dir/.ready") == "$ready" ]]; then
		printf '%s\n' "$dir"
		return
	fi
	dir=$(new_wrapper kubernetes)
	gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
		python3 -c 'import json,sys; print(json.load(sys.stdin).get("GoMod",""))')
	[[ -f $gomod ]] || fail "kube-apiserver: k8s.io/kubernetes@$KUBERNETES_VERSION is not served"
	gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
	{
		printf 'module metrics-aggregation/toolchain/kubernetes\n\ngo %s\n\n' "$gover"
		grep '^godebug ' "$gomod" || true
		printf '\nrequire k8s.io/kubernetes %s\n\n' "$KUBERNETES_VERSION"
		printf '// k8s.io/kubernetes requires its staging modules at v0.0.0 (replaced by ./staging/src/...).\n'
		printf 'replace (\n'
		while IFS= read -r staging; do
			printf '\t%s => %s %s\n' "$staging" "$staging" "$KUBERNETES_STAGING_VERSION"
		done < <(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")
		printf ')\n'
	} >"$dir/go.mod"
	tools_file "$dir" "${KUBERNETES_MAINS[@]}"
	(cd "$dir" && run_logged kube-apiserver go mod tidy)
	printf '%s\n' "$ready" >"$dir/.ready"
	printf '%s\n' "$dir"
}

kubernetes_ldflags() {
	local v=${KUBERNETES_VERSION#v} flags="-s -w" pkg major minor date
	major=${v%%.*}
	minor=${v#*.}
	minor=${minor%%.*}
	date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
		flags+=" -X $pkg.gitCommit=$KUBERNETES_VERSION -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
	done
	printf '%s\n' "$flags"
}

build_kube_apiserver() {
	local dir
	dir=$(kubernetes_wrapper)
	go_build kube-apiserver "$dir" "$BIN/kube-apiserver" "$(kubernetes_ldflags)" "" k8s.io/kubernetes/cmd/kube-apiserver
}

build_kubectl() {
	local dir
	dir=$(kubernetes_wrapper)
	go_build kubectl "$dir" "$BIN/kubectl" "$(kubernetes_ldflags)" "" k8s.io/kubernetes/cmd/kubectl
}

# Not asked for by the sandbox plan, but cheap from the same wrapper: without its namespace
# controller a bare kube-apiserver never finishes deleting a Namespace (`pulumi destroy` waits).
build_kube_controller_manager() {
	local dir
	dir=$(kubernetes_wrapper)
	go_build kube-controller-manager "$dir" "$BIN/kube-controller-manager" "$(kubernetes_ldflags)" "" \
		k8s.io/kubernetes/cmd/kube-controller-manager
}

# ------------------------------------------------------------------ commands

UNAVAILABLE=()

build_one() {
	local comp=$1 t0 rc=0
	if is_built "$comp"; then
		say "up to date: $comp $(version_of "$comp") ($(outputs "$comp"))"
		return 0
	fi
	t0=$(date +%s)
	say "building $comp $(version_of "$comp") …"
	: >"$LOGS/$comp.log"
	rm -f "$LOGS/$comp.unavailable"
	# A subshell not in a ||/&& list, so that `set -e` stays in force inside the recipe.
	set +e
	(
		set -e
		"build_${comp//-/_}"
	)
	rc=$?
	set -e
	if [[ $rc -eq 3 ]]; then
		say "UNAVAILABLE: $comp $(version_of "$comp"): $(cat "$LOGS/$comp.unavailable" 2>/dev/null)"
		UNAVAILABLE+=("$comp")
		return 0
	elif [[ $rc -ne 0 ]]; then
		die "$comp (log: $LOGS/$comp.log)"
	fi
	mark_built "$comp"
	say "built $comp in $(($(date +%s) - t0))s: $(outputs "$comp")"
}

cmd_build() {
	local comps=("$@") comp explicit=0 built_any=0
	if [[ ${#comps[@]} -eq 0 || ${comps[0]} == all ]]; then
		comps=("${ALL_COMPONENTS[@]}")
	else
		explicit=1
	fi
	for comp in "${comps[@]}"; do
		outputs "$comp" >/dev/null || die "unknown component '$comp' (known: ${ALL_COMPONENTS[*]})"
	done
	check_go
	mkdir -p "$BIN" "$PROVIDERS" "$WORK" "$STAMPS" "$LOGS"
	say "cache $TC_DIR (key $KEY from toolchain/versions.env), log $LOG"
	for comp in "${comps[@]}"; do
		is_built "$comp" || built_any=1
		build_one "$comp"
	done
	if [[ $built_any -eq 0 ]]; then say "nothing to do: every requested component is up to date"; fi
	if [[ ${#UNAVAILABLE[@]} -gt 0 ]]; then
		if [[ $explicit -eq 1 ]]; then
			die "not buildable from the Go module proxy: ${UNAVAILABLE[*]} (see toolchain/versions.env)"
		fi
		say "ready: $BIN (not buildable from the Go module proxy, skipped: ${UNAVAILABLE[*]}; see toolchain/versions.env)"
	else
		say "ready: $BIN"
	fi
}

load_pulumi_env() {
	# shellcheck disable=SC2034 # read by pulumi.env
	TOOLCHAIN_REPO_ROOT=$REPO_ROOT
	# shellcheck source=pulumi.env disable=SC1091
	. "$HERE/pulumi.env"
}

cmd_install_plugins() {
	local comp name version bin dest
	load_pulumi_env
	[[ -x $BIN/pulumi ]] || die "install-plugins: $BIN/pulumi is not built (run: bash toolchain/build.sh build pulumi)"
	for comp in kubernetes command tls; do
		bin=$TC_DIR/$(outputs "$comp")
		[[ -x $bin ]] || continue
		name=${bin##*/pulumi-resource-}
		version=$(version_of "$comp")
		dest=$PULUMI_HOME/plugins/resource-$name-v$version/pulumi-resource-$name
		if [[ -x $dest ]] && cmp -s "$bin" "$dest"; then
			continue
		fi
		if [[ -e ${dest%/*} ]]; then
			PULUMI_HOME=$PULUMI_HOME PATH="$BIN:$PATH" pulumi plugin rm resource "$name" "$version" --yes >&2 ||
				rm -rf "${dest%/*}" "${dest%/*}.lock"
		fi
		say "installing plugin resource $name $version into $PULUMI_HOME/plugins"
		# PULUMI_HOME explicitly: pulumi.env sets it without exporting it, and the CLI would otherwise
		# install into ~/.pulumi, where the project's runs never look
		PULUMI_HOME=$PULUMI_HOME PATH="$BIN:$PATH" pulumi plugin install resource "$name" "$version" --file "$bin" >&2 ||
			die "pulumi plugin install resource $name $version --file $bin"
	done
}

# shq VALUE: single-quoted for any POSIX shell (make runs recipes with /bin/sh).
shq() {
	local q="'\\''"
	printf "'%s'" "${1//\'/$q}"
}

cmd_env() {
	local var
	[[ -x $BIN/pulumi ]] || say "warning: $BIN/pulumi is not built yet (run: make toolchain)"
	if [[ -x $BIN/pulumi ]]; then cmd_install_plugins; else load_pulumi_env; fi
	# A file:// backend must exist before `pulumi stack select --create` can use it.
	if [[ $PULUMI_BACKEND_URL == file://* ]]; then mkdir -p "${PULUMI_BACKEND_URL#file://}"; fi
	printf 'export PATH=%s\n' "$(shq "$BIN:$PATH")"
	for var in "${PULUMI_ENV_VARS[@]}"; do
		if [[ -n ${!var+x} ]]; then printf 'export %s=%s\n' "$var" "$(shq "${!var}")"; fi
	done
}

# prune: remove the cache dirs of other keys (older versions.env contents).
cmd_prune() {
	local d
	[[ -d $CACHE_ROOT ]] || return 0
	for d in "$CACHE_ROOT"/*/; do
		d=${d%/}
		[[ ${d##*/} == "$KEY" ]] && continue
		say "removing stale toolchain $d ($(du -sh "$d" | cut -f1))"
		rm -rf "$d"
	done
}

cmd_list() {
	local comp state
	for comp in "${ALL_COMPONENTS[@]}"; do
		state=missing
		if is_built "$comp"; then state=built; fi
		printf '%-24s %-10s %-8s %s\n' "$comp" "$(version_of "$comp")" "$state" "$(outputs "$comp")"
	done
}

main() {
	local sub=${1:-build}
	if [[ $# -gt 0 ]]; then shift; fi
	case $sub in
	build) cmd_build "$@" ;;
	bin-dir) printf '%s\n' "$BIN" ;;
	env) cmd_env ;;
	install-plugins) cmd_install_plugins ;;
	list) cmd_list ;;
	key) printf '%s\n' "$KEY" ;;
	prune) cmd_prune ;;
	-h | --help | help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
	*) die "unknown subcommand '$sub' (build, bin-dir, env, install-plugins, list, key, prune)" ;;
	esac
}

main "$@"
