#!/usr/bin/env bash
# sandbox/demo.sh: the main job against the sandbox (`make demo` runs it after `python -m sandbox up`):
#   pulumi up --yes -s sandbox, then the metrics API answered through the aggregation layer.
# Environment: the toolchain's exports (eval "$(bash toolchain/build.sh env)"), SANDBOX_DIR, KUBECTL.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${SANDBOX_DIR:?}"
: "${KUBECTL:?}"
export PULUMI_BACKEND_URL="file://$SANDBOX_DIR/state"
export KUBECONFIG="$SANDBOX_DIR/admin.kubeconfig"
mkdir -p "$SANDBOX_DIR/state"

say() { printf '\n==> %s\n' "$*"; }

say "pulumi up --yes -s sandbox, with the policy pack (state: $PULUMI_BACKEND_URL)"
pulumi stack select --create sandbox --secrets-provider passphrase >/dev/null
start=$(date +%s)
pulumi up --yes --stack sandbox --skip-preview --suppress-progress \
	--policy-pack "$REPO/policy" --policy-pack-config "$REPO/policy/config/sandbox.json"
say "pulumi up took $(($(date +%s) - start))s"

say "kubectl get apiservice v1beta1.metrics.k8s.io"
"$KUBECTL" get apiservice v1beta1.metrics.k8s.io

say "kubectl get --raw /apis/metrics.k8s.io/v1beta1/nodes   (answered by metrics-server through the aggregation layer)"
# metrics-server reports a node once it has scraped it twice (metricResolution apart): wait up to 90 s
# for every node to be in the list
nodes=$("$KUBECTL" get nodes --no-headers | wc -l)
body=""
for _ in $(seq 1 45); do
	body=$("$KUBECTL" get --raw /apis/metrics.k8s.io/v1beta1/nodes)
	[ "$(grep -o '"usage"' <<<"$body" | wc -l)" -ge "$nodes" ] && break
	sleep 2
done
printf '%s\n' "$body"

say "kubectl top node"
"$KUBECTL" top node || true

cat <<MSG

The sandbox keeps running. Try:
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL get apiservice v1beta1.metrics.k8s.io
  make preview STACK=sandbox        (pulumi preview --diff with the policy pack: no changes)
Tear down:  make sandbox-down        (stops every process, deletes the namespaces, $SANDBOX_DIR and the stack state)
MSG
