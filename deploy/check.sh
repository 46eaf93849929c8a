#!/usr/bin/env bash
# Offline validation of deploy/ (no cluster, no Docker engine): `make check-deploy`, which
# installs the tools first (.venv/bin/kubectl from requirements/dev.lock, the rest from
# requirements/tools.lock into .venv/tools). In order: render every overlay with kubectl
# kustomize; validate against the oldest and newest Kubernetes we support; checkov (skips
# named with reasons in deploy/checkov.yaml); hadolint; yamllint; promtool on every
# PrometheusRule, and its unit tests (`*.test.yaml`). Prints each step's time.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBECTL=.venv/bin/kubectl
TOOLS=.venv/tools/bin
# The Kubernetes versions we support: 1.29 is the oldest (matchLabelKeys in topology spread
# and the PDB's unhealthyPodEvictionPolicy are on by default from there).
K8S_VERSIONS=(1.29.0 1.37.0)
# Custom resources rendered by the components; kubernetes-validate has no schema for them.
CRD_KINDS='ExternalSecret|PodMonitor|PrometheusRule|ServiceMonitor'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
started=$SECONDS
step() {
    echo "== $1 ($((SECONDS - started)) s in)"
}

step "kubectl kustomize, every overlay"
# Overlays whose Secrets come from git-ignored env files build here from their examples, in a
# copy: your real env files are never read, and the examples are never written into deploy/.
cp -r deploy "$work/deploy"
while IFS= read -r example; do
    cp "$example" "${example%.example}"
done < <(find "$work/deploy" -name '*.env.example')
mkdir "$work/rendered"
for dir in "$work"/deploy/overlays/*/; do
    name=$(basename "$dir")
    "$KUBECTL" kustomize "$dir" > "$work/rendered/$name.yaml"
    echo "$name: $(grep -c '^kind:' "$work/rendered/$name.yaml") resources"
done

for version in "${K8S_VERSIONS[@]}"; do
    step "kubernetes-validate --strict, Kubernetes $version"
    out=$("$TOOLS/kubernetes-validate" --strict --quiet -k "$version" "$work"/rendered/*.yaml 2>&1) || {
        echo "$out"
        exit 1
    }
    # A missing schema is only a warning there: allow it for our custom resources alone.
    unknown=$(grep -v -E "Couldn't find schema for kind ($CRD_KINDS) " <<<"$out" | grep . || true)
    if [ -n "$unknown" ]; then
        echo "$unknown"
        exit 1
    fi
done

step "checkov (kubernetes, dockerfile)"
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
"$TOOLS/checkov" --config-file deploy/checkov.yaml --skip-download --quiet --compact \
    --framework kubernetes -d "$work/rendered"
"$TOOLS/checkov" --config-file deploy/checkov.yaml --skip-download --quiet --compact \
    --framework dockerfile -f deploy/Dockerfile

step "hadolint"
"$TOOLS/hadolint" deploy/Dockerfile

step "yamllint"
"$TOOLS/yamllint" --strict -c deploy/yamllint.yaml deploy

step "promtool check rules"
rules=$("$TOOLS/python" - "$work" <<'EOF'
"""Write each PrometheusRule's spec (a rule file) found in the rendered overlays; print paths."""
import sys
from pathlib import Path

import yaml

work = Path(sys.argv[1])
seen = set()
for rendered in sorted((work / "rendered").glob("*.yaml")):
    for doc in yaml.safe_load_all(rendered.read_text()):
        if doc and doc.get("kind") == "PrometheusRule" and doc["metadata"]["name"] not in seen:
            seen.add(doc["metadata"]["name"])
            path = work / f"rules-{doc['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(doc["spec"]))
            print(path)
EOF
)
if [ -z "$rules" ]; then
    echo "no PrometheusRule in deploy/: nothing to check"
else
    promtool=$(command -v promtool || true)
    if [ -z "$promtool" ]; then
        # Debian's prometheus package, unpacked (not installed: that would start a server).
        promtool=$PWD/.venv/tools/prometheus/usr/bin/promtool
        if [ ! -x "$promtool" ]; then
            (cd "$work" && { apt-get download prometheus 2>/dev/null ||
                { apt-get update -qq && apt-get download prometheus; }; })
            dpkg-deb -x "$work"/prometheus_*.deb .venv/tools/prometheus
        fi
    fi
    "$promtool" --version | head -1
    # shellcheck disable=SC2086 # one path per line
    "$promtool" check rules $rules
    step "promtool test rules"
    # Each test file names the rule files above by their names in $work.
    for test in deploy/components/*/*.test.yaml; do
        cp "$test" "$work/"
        (cd "$work" && "$promtool" test rules "$(basename "$test")")
    done
fi

step "done"
