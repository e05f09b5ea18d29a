#!/usr/bin/env bash
# Builds llama.cpp's CUDA backend, libggml-cuda.so and the libggml-base.so.0 it links, from the
# same ggml sources the Go binary compiles (the pinned ollama module's), into bin/lib/ next to
# bin/probe, where probe looks for backends at start (PROBE_BACKEND_DIR names other folders).
# Then `probe … -ngl -1` offloads every layer. Needs CMake ≥ 3.21 and the CUDA toolkit (nvcc).
#
# Environment:
#   CUDA_ARCH      CUDA architectures (default 90, Hopper; 80 Ampere, 89 Ada; "native")
#   GGML_DIR       ggml's sources; default: the ollama module's (needs Go), or build/device/ggml
#                  (copied there by `make device-bin` for a GPU box without Go)
#   OUT_DIR        where the libraries go (default bin/lib)
#   BUILD_DIR      CMake's build folder (default build/cuda)
#   PROBE_CUDA_FA  ON also compiles the flash-attention kernels (off: probe runs without
#                  flash attention, and they are most of the compile time)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${GGML_DIR:-}" ]; then
	if command -v go >/dev/null; then
		GGML_DIR=$(go list -m -f '{{.Dir}}' github.com/ollama/ollama)/ml/backend/ggml/ggml
	else
		GGML_DIR=build/device/ggml
	fi
fi
GGML_DIR=$(realpath "$GGML_DIR")
B=${BUILD_DIR:-build/cuda}
OUT=${OUT_DIR:-bin/lib}
if ! command -v nvcc >/dev/null; then
	for d in /usr/local/cuda/bin /usr/local/cuda-*/bin /opt/cuda/bin; do
		if [ -x "$d/nvcc" ]; then PATH=$PATH:$d; break; fi
	done
fi
command -v nvcc >/dev/null || { echo "build-cuda: nvcc not found (install the CUDA toolkit)" >&2; exit 1; }
command -v cmake >/dev/null || { echo "build-cuda: cmake not found" >&2; exit 1; }
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
start=$(date +%s)
cmake -S scripts/cuda -B "$B" "${gen[@]}" -DGGML_DIR="$GGML_DIR" \
	-DCMAKE_CUDA_COMPILER="$(command -v nvcc)" \
	-DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" -DPROBE_CUDA_FA="${PROBE_CUDA_FA:-OFF}"
cmake --build "$B" --target ggml-cuda -j"$(nproc)"
mkdir -p "$OUT"
rm -f "$OUT"/libggml-cuda.so "$OUT"/libggml-base.so*
cp -a "$B"/lib/libggml-cuda.so "$B"/lib/libggml-base.so* "$OUT"/
echo "build-cuda: built in $(($(date +%s) - start)) s for CUDA architecture ${CUDA_ARCH:-90} into $OUT"
ls -l "$OUT"
