#!/usr/bin/env bash
# Builds llama.cpp's CUDA backend (libggml-cuda.so, with the libggml-base.so it links) from the
# same ollama module sources the Go binary compiles, into bin/lib/, where probe looks for
# backends at start (PROBE_BACKEND_DIR overrides). Needs CMake and the CUDA toolkit (nvcc);
# a GPU box without Go can run it from a checkout that carries the module directory in
# OLLAMA_DIR. Then: probe … -ngl -1 offloads every layer.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${OLLAMA_DIR:-$(go list -m -f '{{.Dir}}' github.com/ollama/ollama)}
B=${BUILD_DIR:-build/cuda}
cmake -S "$D" -B "$B" -DCMAKE_BUILD_TYPE=Release ${CUDA_ARCH:+-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH}
cmake --build "$B" --target ggml-cuda -j"$(nproc)"
mkdir -p bin/lib
find "$B" -name 'libggml-cuda.so*' -exec cp -a {} bin/lib/ \;
find "$B" -name 'libggml-base.so*' -exec cp -a {} bin/lib/ \;
ls -l bin/lib
