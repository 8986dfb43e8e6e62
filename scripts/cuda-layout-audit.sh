#!/usr/bin/env bash
# The test suite on the generic path (the one CUDA takes), with candle's CUDA
# layout rule for matrix products enforced on the CPU.
#
#   scripts/cuda-layout-audit.sh [CARGO TEST ARGS]
#
# Candle's CPU matmul takes operands of any strides; its CUDA matmul takes only
# dense row- or column-major ones and fails on the rest (`MatMulNonContiguous`),
# so a permuted view that passes every CPU test can fail on a GPU. This script
# copies the locked candle-core into `target/cuda-layout-audit/`, makes its CPU
# matmul check the CUDA rule first (`cuda-layout-audit/gemm_rule.rs`), and runs
# `VIVIT_KERNELS=generic cargo test` against that copy (a `[patch]` given on the
# command line; Cargo.lock is restored afterwards). A failure names the
# operands' layouts; RUST_BACKTRACE=1 adds where the product was called.
# CI runs it (about 5 minutes cold on 2 cores, its own target folder).
set -euo pipefail
cd "$(dirname "$0")/.."

audit="$PWD/target/cuda-layout-audit"
version=$(awk '/^name = "candle-core"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
manifest=$(cargo metadata --format-version 1 --locked |
    grep -o "\"manifest_path\":\"[^\"]*/candle-core-$version/Cargo.toml\"" | head -n 1 | cut -d'"' -f4)
if [ -z "$manifest" ]; then
    echo "cuda-layout-audit: candle-core $version's source was not found" >&2
    exit 1
fi
mkdir -p "$audit"
rm -rf "$audit/candle-core"
cp -r "$(dirname "$manifest")" "$audit/candle-core"
backend="$audit/candle-core/src/cpu_backend/mod.rs"
anchor='        MatMul(bmnk).map(self, lhs_l, rhs, rhs_l)'
if [ "$(grep -cxF "$anchor" "$backend")" != 1 ]; then
    echo "cuda-layout-audit: candle-core $version's CPU matmul has changed; update the anchor" >&2
    exit 1
fi
sed -i "s/^$anchor\$/        cuda_gemm_rule(bmnk, lhs_l, rhs_l)?;\n&/" "$backend"
cat scripts/cuda-layout-audit/gemm_rule.rs >>"$backend"

cp Cargo.lock "$audit/Cargo.lock.locked"
trap 'cp "$audit/Cargo.lock.locked" Cargo.lock' EXIT
VIVIT_KERNELS=generic CARGO_TARGET_DIR="$audit/target" cargo test \
    --config "patch.crates-io.candle-core.path=\"$audit/candle-core\"" "$@"
