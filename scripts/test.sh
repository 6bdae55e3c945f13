#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine of this kind, then runs them.
# Needs root: the tests start nfs-ganesha and rpcbind, and (node plugin) mount.
set -euo pipefail
cd "$(dirname "$0")/.."

# xfsprogs: xfs_quota for quota volumes (and mkfs.xfs for their VM test).
# libclang-dev: loopdev-3 generates its ioctl bindings with bindgen; curl: the HTTP/2 body tests.
packages=(nfs-ganesha nfs-ganesha-vfs rpcbind e2fsprogs xfsprogs util-linux libclang-dev curl kmod xz-utils iproute2 fonts-dejavu-core)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

bash scripts/check-deploy.sh

# One build per run: incremental state would only take disk (2+ GB).
export CARGO_INCREMENTAL=0

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The end-to-end tests run the real binary: build it first.
cargo build --workspace --locked
cargo nextest run --workspace --locked --no-fail-fast
bash scripts/fuzz.sh
