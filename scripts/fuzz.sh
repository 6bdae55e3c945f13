#!/usr/bin/env bash
# Builds every cargo-fuzz target under fuzz/ and runs each for a bounded time, starting
# from its committed corpus (fuzz/corpus/<target>/, never grown: new inputs go to a
# temporary directory). Fails if any target crashes, leaks past its limits or hangs.
#
#   FUZZ_SECONDS=30    seconds per target (default 30)
#   FUZZ_TARGETS="ids patch"   only these targets (default: all of `cargo fuzz list`)
#   FUZZ_SANITIZER=address     cargo fuzz's -s: address (default) or none
#
# Coverage instrumentation (-Cpasses=sancov-module, -Cllvm-args) is stable; the sanitizer
# flag (-Zsanitizer=address) is not, and stable rustc takes it under RUSTC_BOOTSTRAP=1
# (the stable toolchain ships the ASan runtime; ARCHITECTURE.md, Fuzzing).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-address}"
export CARGO_INCREMENTAL=0

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

# The targets are code too. Clippy shares the main target directory: the fuzz crate's
# dev profile is the workspace's, so what the main clippy run checked is reused.
cargo fmt -- --check
CARGO_TARGET_DIR=../target cargo clippy --all-targets --locked -- -D warnings

export RUSTC_BOOTSTRAP=1
# 16 codegen units (cargo fuzz's default is 1): the cold build instruments the whole
# dependency tree and must fit CI's budget; runs are somewhat slower per input.
build_flags=(-s "$sanitizer" --codegen-units 16)

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
# `cargo fuzz build TARGET` takes one target; all of them build at once unless narrowed.
if [[ -z "${FUZZ_TARGETS:-}" ]]; then
  cargo fuzz build "${build_flags[@]}"
else
  for target in "${targets[@]}"; do cargo fuzz build "${build_flags[@]}" "$target"; done
fi
echo "fuzz: built ${#targets[@]} targets in $(($(date +%s) - start)) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# libFuzzer adds new inputs to the first corpus directory: a scratch one, so the
# committed seeds never grow. The binaries run directly, as `cargo fuzz run` would run them.
bin_dir="target/$(rustc -vV | sed -n 's/^host: //p')/release"
if [[ "$sanitizer" == address ]]; then
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
fi
failed=()
for target in "${targets[@]}"; do
  mkdir -p "$work/$target" "$work/artifacts/$target"
  echo "fuzz: $target for ${seconds} s"
  # -max_len: the parsers' inputs are short (IDs 128 bytes, bodies a few KiB); longer
  # inputs only slow the search. -rss_limit_mb / -malloc_limit_mb: the targets assert
  # their own tighter, input-proportional bounds; these catch what escapes them.
  if ! "$bin_dir/$target" "$work/$target" "corpus/$target" \
    -max_total_time="$seconds" -max_len=4096 -timeout=10 \
    -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/$target/" >"$work/$target.log" 2>&1; then
    failed+=("$target")
    # The panic message and the top of its stack, then libFuzzer's verdict.
    grep -E -m 1 -A 24 'panicked at|==ERROR' "$work/$target.log" || tail -n 40 "$work/$target.log"
    grep -E '^SUMMARY' "$work/$target.log" || true
    for artifact in "$work/artifacts/$target"/*; do
      [[ -f "$artifact" ]] || continue
      echo "fuzz: $target failing input $(basename "$artifact") (base64; reproduce with" \
        "cargo fuzz run -s $sanitizer $target FILE):"
      base64 -w 0 "$artifact"
      echo
    done
  else
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$work/$target.log" |
      tr '\n' ' ' | sed "s/^/fuzz: $target /"
    echo
  fi
done
echo "fuzz: ${#targets[@]} targets in $(($(date +%s) - start)) s"
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
