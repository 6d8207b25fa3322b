#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/): the client message decoder
# (frontend), the server message scanner (backend) and the statement
# classifier (classify), each for FUZZ_SECONDS (default 600) on its corpus
# in fuzz/corpus/<target>, then minimises the corpus. Not part of CI.
#   scripts/fuzz.sh                 # all three, 10 minutes each
#   FUZZ_SECONDS=60 scripts/fuzz.sh classify
# Needs the nightly toolchain (rustup) and cargo-fuzz (installed if absent).
# A crash leaves its input in fuzz/artifacts/<target>/: add it as a
# regression test (tests/hostile.rs or the module's unit tests).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
seconds=${FUZZ_SECONDS:-600}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frontend backend classify)
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${seconds}s"
  mkdir -p "fuzz/corpus/$t"
  cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- -max_total_time="$seconds" -max_len=65536 -print_final_stats=1
  cargo +nightly fuzz cmin "$t" "fuzz/corpus/$t"
done
