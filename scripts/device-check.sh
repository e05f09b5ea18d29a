#!/usr/bin/env bash
# The GPU check, in one run on a CUDA machine (nvcc and CMake; no Go, no network needed):
#   1. builds the CUDA backend from the ggml sources the Go binary compiles (scripts/build-cuda.sh),
#      for CUDA_ARCH (default 90), and prints how long it took;
#   2. shows that the Go binary loads it (probe info --devices) and offloads layers (-ngl), and
#      that a backend that cannot load leaves probe on the CPU with a warning;
#   3. compares capture with every layer on the GPU against the CPU on a tiny and a bench-size
#      model (n_embd 1024 × 12 layers, 32k vocabulary; F32, F16, Q8_0, Q4_K_M), within the
#      tolerances TestGPUCaptureMatchesCPU states;
#   4. prints decode-only vs capture tokens/s on the GPU for 512-token prompts and for
#      single-token generation steps (BenchmarkGPU).
# Prepare on a machine with Go: `make device-bin` puts a portable build of probe, the bindings
# test binary and the ggml sources into build/device/ (about 30 MiB); copy the repository with
# that folder to the GPU machine and run this script from its root. Output goes to stdout and,
# when OUT names a folder, to $OUT/device-check.log with the built libraries as a tarball.
# REUSE_BACKEND=1 skips step 1 when build/device/bin/lib already holds the libraries.
set -uo pipefail
cd "$(dirname "$0")/.."
DEV=${DEVICE_DIR:-build/device}
BIN=$DEV/bin
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
if [ -n "${OUT:-}" ]; then
	mkdir -p "$OUT"
	exec > >(tee "$OUT/device-check.log") 2>&1
fi
failed=()
step() { printf '\n== %s\n' "$*"; }
check() { # check NAME CMD...: run, remember a failure, go on
	local name=$1
	shift
	"$@" || { echo "!! $name failed (exit $?)"; failed+=("$name"); }
}
for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
	if [ -x "$d/nvcc" ] && ! command -v nvcc >/dev/null; then PATH=$PATH:$d; fi
done
cuda_lib=$(dirname "$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")")/lib64
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$cuda_lib
[ -x "$BIN/probe" ] && [ -x "$BIN/bindings.test" ] || { echo "no $BIN/probe or $BIN/bindings.test: run make device-bin first"; exit 2; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
echo "nvcc: $(command -v nvcc) ($(nvcc --version | tail -1))"
cmake --version | head -1
echo "$(nproc) CPU cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"

step "1. build the CUDA backend"
if [ -n "${REUSE_BACKEND:-}" ] && [ -f "$BIN/lib/libggml-cuda.so" ]; then
	echo "reusing $BIN/lib"
else
	check build-cuda env GGML_DIR="$DEV/ggml" OUT_DIR="$BIN/lib" BUILD_DIR="$T/cuda-build" scripts/build-cuda.sh
fi
readelf -d "$BIN/lib/libggml-cuda.so" 2>/dev/null | grep -E 'NEEDED|RUNPATH'
ldd "$BIN/lib/libggml-cuda.so" 2>/dev/null | grep -E 'not found|ggml|cudart|cublas'
if [ -n "${OUT:-}" ] && [ -f "$BIN/lib/libggml-cuda.so" ]; then
	tar -C "$BIN" -cJf "$T/lib.tar.xz" lib && split -b 15M "$T/lib.tar.xz" "$OUT/lib.tar.xz." && ls -l "$OUT"
fi

step "2. the binary loads the backend and offloads"
check devices "$BIN/probe" info --devices
check tiny "$BIN/probe" model tiny -o "$T/tiny.gguf"
check offload-all "$BIN/probe" info "$T/tiny.gguf" -ngl -1
check offload-two "$BIN/probe" info "$T/tiny.gguf" -ngl 2
echo '{"id":"a","prompt":"hello world","label":true}
{"id":"b","prompt":"the quick brown fox","label":false}' >"$T/p.jsonl"
check dump-gpu "$BIN/probe" dump -m "$T/tiny.gguf" -ngl 99 -i "$T/p.jsonl" -o "$T/dump-gpu" --positions all
check dump-cpu "$BIN/probe" dump -m "$T/tiny.gguf" --no-gpu -i "$T/p.jsonl" -o "$T/dump-cpu" --positions all
python3 - "$T" <<'PY' || failed+=(dump-compare)
import sys, glob, numpy as np
from safetensors.numpy import load_file
t = sys.argv[1]
g = load_file(sorted(glob.glob(t + "/dump-gpu/shard-*.safetensors"))[0])
c = load_file(sorted(glob.glob(t + "/dump-cpu/shard-*.safetensors"))[0])
worst = max(float(np.abs(g[k] - c[k]).max() / np.abs(c[k]).max()) for k in c)
print(f"probe dump -ngl 99 vs CPU, {len(c)} layers: worst relative difference {worst:.2e}")
sys.exit(0 if worst < 2e-3 else 1)
PY
# A backend folder whose library cannot load: probe says why and runs on the CPU.
mkdir -p "$T/broken/lib" && cp "$BIN/probe" "$T/broken/" && echo 'not a library' >"$T/broken/lib/libggml-cuda.so"
"$T/broken/probe" info --devices
if "$T/broken/probe" info "$T/tiny.gguf" -ngl -1 2>&1 | tee "$T/broken.txt" | grep -q 'running on the CPU'; then
	echo "fallback: ok"
else
	cat "$T/broken.txt"
	failed+=(fallback)
fi

step "3. capture on the GPU matches the CPU"
check capture-test "$BIN/bindings.test" -test.run 'TestGPUCaptureMatchesCPU' -test.v -test.count 1

step "4. tokens/s on the GPU: decode only vs capture"
check bench "$BIN/bindings.test" -test.run '^$' -test.bench 'BenchmarkGPU' -test.benchtime "${BENCHTIME:-30x}" -test.count 1

step "done"
if [ ${#failed[@]} -gt 0 ]; then
	echo "FAILED: ${failed[*]}"
	exit 1
fi
echo "all device checks passed"
