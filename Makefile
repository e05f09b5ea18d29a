# probe — build, test and demo.
# Test packages run one at a time (-p 1): ggml's worker threads spin-wait at every op, so two
# test binaries sharing two cores slow each other down many times over. Every Go command that touches cgo goes through here,
# because cgo can only say ${SRCDIR} and llama.cpp's headers live in the ollama module.
SHELL := /bin/bash
GO ?= go
OLLAMA_DIR := $(shell $(GO) list -m -f '{{.Dir}}' github.com/ollama/ollama 2>/dev/null)
ifeq ($(OLLAMA_DIR),)
OLLAMA_DIR := $(shell $(GO) mod download -json github.com/ollama/ollama | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
endif

# The bare cgo build of ggml has no -march: 10-25x slower (docs/DESIGN.md §2). PORTABLE=1 targets AVX2/FMA.
ifeq ($(PORTABLE),1)
ARCH_FLAGS := -march=x86-64-v3
else
ARCH_FLAGS := -march=native
endif
export CGO_ENABLED := 1
export CGO_CFLAGS := -O3 $(ARCH_FLAGS)
export CGO_CXXFLAGS := -O3 $(ARCH_FLAGS)
export CGO_CPPFLAGS := -I$(OLLAMA_DIR)/llama/llama.cpp/include -I$(OLLAMA_DIR)/ml/backend/ggml/ggml/include -DGGML_USE_CPU_REPACK

BIN := bin/probe
BUILD := build
DEMO_DIR ?= $(BUILD)/demo
TEST_FLAGS ?=
ifeq ($(CI),true)
TEST_TIMEOUT ?= 80m
else
TEST_TIMEOUT ?= 40m
endif

.PHONY: all build test race vet fmt demo bench bench-go bench-portable clean env cuda device-bin fuzz

all: build

build:
	$(GO) build -o $(BIN) ./cmd/probe

vet:
	$(GO) vet ./...

test: vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt needed"; exit 1; }
	$(GO) test -p 1 -race -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...
	CGO_ENABLED=0 $(GO) test -timeout 10m ./probe/...
	$(GO) test -run '^$$' -fuzz '^FuzzLoadModel$$' -fuzztime $(TEST_FUZZTIME) ./bindings

# fuzz runs the model-loading fuzzer (bindings.FuzzLoadModel) for FUZZTIME; make test runs it
# for TEST_FUZZTIME. Inputs that crash are saved under bindings/testdata/fuzz/.
FUZZTIME ?= 1h
TEST_FUZZTIME ?= 20s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzLoadModel$$' -fuzztime $(FUZZTIME) ./bindings

race:
	$(GO) test -p 1 -race -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...

demo: build
	./$(BIN) demo -o $(DEMO_DIR)

# bench runs probe bench (BENCHMARKS.md): throughput of capture and dump against decoding alone,
# a PORTABLE=1 build and upstream llama.cpp (node-llama-cpp from npm), and dump memory.
# BENCH_FLAGS adds flags (e.g. --json). bench-go runs the Go benchmarks.
BENCH_DIR := $(BUILD)/bench
BENCH_FLAGS ?=
bench: build bench-portable
	./$(BIN) bench --dir $(BENCH_DIR) --portable $(BENCH_DIR)/probe-portable $(BENCH_FLAGS)

bench-portable:
ifneq ($(PORTABLE),1)
	$(MAKE) PORTABLE=1 bench-portable
else
	mkdir -p $(BENCH_DIR)
	$(GO) build -o $(BENCH_DIR)/probe-portable ./cmd/probe
endif

bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./bindings/ ./probe/ ./internal/serve/llama/

# cuda builds the CUDA backend (libggml-cuda.so + libggml-base.so.0) into bin/lib, next to
# bin/probe, from the module's ggml sources (needs CMake and nvcc; see scripts/build-cuda.sh).
# CUDA_ARCH=90 (default), 80, 89, … picks the GPU architecture.
cuda:
	GGML_DIR=$(OLLAMA_DIR)/ml/backend/ggml/ggml scripts/build-cuda.sh

# device-bin prepares build/device/ for a GPU machine without Go (scripts/device-check.sh): a
# portable (x86-64-v3) probe binary, the bindings test binary (GPU tests and benchmarks), and
# the ggml sources the CUDA build compiles.
DEVICE_DIR := $(BUILD)/device
GGML_SRC := $(OLLAMA_DIR)/ml/backend/ggml/ggml
device-bin:
ifneq ($(PORTABLE),1)
	$(MAKE) PORTABLE=1 device-bin
else
	mkdir -p $(DEVICE_DIR)/bin
	$(GO) build -ldflags '-s -w' -o $(DEVICE_DIR)/bin/probe ./cmd/probe
	$(GO) test -c -ldflags '-s -w' -o $(DEVICE_DIR)/bin/bindings.test ./bindings
	rm -rf $(DEVICE_DIR)/ggml
	mkdir -p $(DEVICE_DIR)/ggml/src
	cp -r $(GGML_SRC)/cmake $(GGML_SRC)/include $(DEVICE_DIR)/ggml/
	cp -r $(GGML_SRC)/src/ggml-cuda $(GGML_SRC)/src/ggml-cpu $(DEVICE_DIR)/ggml/src/
	find $(GGML_SRC)/src -maxdepth 1 -type f -exec cp {} $(DEVICE_DIR)/ggml/src/ \;
	chmod -R u+w $(DEVICE_DIR)/ggml
	find $(DEVICE_DIR)/ggml -name '*.go' -delete # not Go packages of this module (go ./... walks build/)
	du -sh $(DEVICE_DIR)
endif

clean:
	rm -rf bin $(BUILD)

# env prints the variables, for running go commands by hand: eval "$$(make -s env)"
env:
	@echo "export CGO_ENABLED=1 CGO_CFLAGS='$(CGO_CFLAGS)' CGO_CXXFLAGS='$(CGO_CXXFLAGS)' CGO_CPPFLAGS='$(CGO_CPPFLAGS)'"
