#!/usr/bin/env bash
# Builds one stripped release binary of this crate with `--features cuda` on a
# machine without a GPU or a CUDA toolkit (the recipe of the project notes,
# `cuda-build.md`): nvcc 13.0 and the CUDA runtime from pinned PyPI wheels,
# link-time stubs for the driver and the libraries a GPU machine provides.
#
#   scripts/build-cuda.sh [EXAMPLE]      # default: device_check
#
# Everything it installs goes to `.cuda-build/` (git-ignored): a Python venv
# with the wheels (about 104 MB of downloads), a CUDA_HOME made of links into
# it, the stub libraries, and the target folder of the CUDA build. The binary
# is `.cuda-build/bin/EXAMPLE` (and `.cuda-build/wheels` holds the wheels of
# vivit-for-pytorch and BackPACK, to time them there too): the kernels are compiled for compute
# capability 9.0 (H100/H200, `CUDA_COMPUTE_CAP`), and it needs that machine's
# libcuda, libcudart 13, libcublas(Lt) 13, libcurand 10 at run time
# (`scripts/device-check.sh` finds them there). Needs python3 (venv, pip),
# gcc and a Rust toolchain; takes 8–10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

example="${1:-device_check}"
root="$PWD/.cuda-build"
compute_cap="${CUDA_COMPUTE_CAP:-90}"
# CUDA 13.0, as the GPU machine's driver (580) and nvcc: unpinned, pip pulls a
# newer release that cudarc 0.19 rejects and that driver cannot run
wheels=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
)

# 1. the wheels, in one venv
if [ ! -x "$root/venv/bin/python" ]; then
    python3 -m venv "$root/venv"
fi
"$root/venv/bin/pip" install --quiet --no-deps "${wheels[@]}"
tree="$("$root/venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"

# 2. a CUDA_HOME of links into the wheels' tree
cuda="$root/cuda"
mkdir -p "$cuda/lib64/stubs"
for dir in bin include nvvm; do
    ln -sfn "$tree/$dir" "$cuda/$dir"
done
ln -sf "$tree/lib/libcudart.so.13" "$cuda/lib64/libcudart.so"

# 3. link-time stubs: one empty C function per name cudarc binds, with the
# real libraries' sonames (and, where those version their symbols, versions)
cargo fetch --quiet
cudarc="$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
    "$root/venv/bin/python" -c '
import json, sys
packages = json.load(sys.stdin)["packages"]
print(max((p for p in packages if p["name"] == "cudarc"), key=lambda p: tuple(int(x) for x in p["version"].split(".")))["manifest_path"])
')"
cudarc="$(dirname "$cudarc")/src"
stub() { # stub LIBRARY SONAME VERSIONED BINDINGS
    local lib="$1" soname="$2" versioned="$3" bindings="$4" c="$cuda/lib64/stubs/$1.c"
    grep -ho 'pub unsafe fn [A-Za-z0-9_]*' "$cudarc/$bindings/sys/"*.rs | awk '{print $4}' | sort -u |
        sed 's/.*/void &(void) {}/' > "$c"
    local flags=(-shared -fPIC "-Wl,-soname,$soname")
    if [ "$versioned" = yes ]; then
        printf '%s { global: *; };\n' "$soname" > "$c.map"
        flags+=("-Wl,--version-script=$c.map")
    fi
    gcc "${flags[@]}" -o "$cuda/lib64/stubs/$lib.so" "$c"
}
stub libcuda libcuda.so.1 no driver
stub libcublas libcublas.so.13 yes cublas
stub libcublasLt libcublasLt.so.13 yes cublaslt
stub libcurand libcurand.so.10 yes curand
stub libnvrtc libnvrtc.so.13 yes nvrtc

# 4. the build, in its own target folder (the CPU builds keep theirs)
export CUDA_HOME="$cuda" PATH="$cuda/bin:$PATH" CUDA_COMPUTE_CAP="$compute_cap"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-1}" CARGO_TARGET_DIR="$root/target"
export LIBRARY_PATH="$cuda/lib64:$cuda/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
cargo build --release --locked --features cuda --example "$example"
mkdir -p "$root/bin"
strip -o "$root/bin/$example" "$root/target/release/examples/$example"
ls -l "$root/bin/$example"

# 5. the reference's wheels, for timing it on the GPU machine beside the binary
# (scripts/device-check.sh; torch is there already)
"$root/venv/bin/pip" download --quiet --no-deps -d "$root/wheels" \
    vivit-for-pytorch==1.0.0 backpack-for-pytorch==1.7.1 unfoldNd==0.2.3 einops==0.8.2
ls "$root/wheels"
