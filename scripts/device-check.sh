#!/usr/bin/env bash
# Runs the carried `device_check` binary (scripts/build-cuda.sh) on a machine
# with an NVIDIA GPU and no Rust toolchain, from the repository root:
#
#   scripts/device-check.sh OUT [BINARY]     # BINARY: .cuda-build/bin/device_check
#
# It puts that machine's CUDA libraries on LD_LIBRARY_PATH (the toolkit's
# lib64 and the nvidia-* wheels of the Python environments there), writes
# `nvidia-smi` and `ldd` of the binary, then runs it on GPU 0 with the
# fixtures of this tree, and vivit-for-pytorch on the same GPU and problems
# (`benches/reference/compare.py --gpu`, with the wheels of `.cuda-build/wheels`
# installed beside the machine's torch), all into the folder OUT (created):
# `environment.txt`, `device_check.txt`, `reference.txt`. The exit status is
# the binary's.
set -uo pipefail
cd "$(dirname "$0")/.."

out="${1:?usage: scripts/device-check.sh OUT [BINARY]}"
binary="${2:-.cuda-build/bin/device_check}"
mkdir -p "$out"

# the CUDA libraries: the toolkit's, then those of every Python's nvidia wheels
dirs=()
for dir in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
    [ -d "$dir" ] && dirs+=("$dir")
done
for python in python3 /usr/bin/python3 /opt/conda/bin/python3; do
    command -v "$python" > /dev/null || continue
    while IFS= read -r dir; do
        dirs+=("$dir")
    done < <("$python" - 2>/dev/null <<'EOF'
import glob, os, site
roots = site.getsitepackages() + [site.getusersitepackages()]
for root in roots:
    for lib in sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib"))):
        print(lib)
EOF
)
done
LD_LIBRARY_PATH="$(IFS=:; echo "${dirs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH

{
    echo "# $(date -u +%FT%TZ) $(uname -n)"
    echo "# LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    nvidia-smi || echo "nvidia-smi failed"
    echo "# ldd $binary"
    ldd "$binary"
} > "$out/environment.txt" 2>&1

VIVIT_FIXTURES="$PWD/tests/fixtures" "$binary" cuda 2>&1 | tee "$out/device_check.txt"
status="${PIPESTATUS[0]}"
echo "exit status $status" >> "$out/device_check.txt"

# the reference, with the first Python that has torch
for python in python3 /usr/bin/python3 /opt/conda/bin/python3; do
    if "$python" -c 'import torch' 2> /dev/null; then
        pylib="$(mktemp -d)"
        {
            "$python" -m pip install --quiet --no-deps --target "$pylib" .cuda-build/wheels/*.whl &&
                PYTHONPATH="$pylib" "$python" benches/reference/compare.py --gpu
        } 2>&1 | tee "$out/reference.txt"
        break
    fi
done
exit "$status"
