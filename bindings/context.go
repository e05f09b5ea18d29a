package bindings

/*
#include <stdlib.h>
#include "llama.h"
#include "ggml-cpu.h"
#include "capture.h"
#include "free.h"

// probe_threadpool makes a persistent CPU thread pool of n threads, or NULL.
static struct ggml_threadpool * probe_threadpool(int n) {
	struct ggml_threadpool_params tp = ggml_threadpool_params_default(n);
	return ggml_threadpool_new(&tp);
}

static struct llama_context * probe_new_context(struct llama_model * m, struct llama_context_params p, probe_capture * cap) {
	p.cb_eval = probe_capture_cb;
	p.cb_eval_user_data = cap;
	return probe_init_from_model(m, p);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// KVType is the element type of the KV cache.
type KVType string

// KV cache types. F16 is llama.cpp's default; F32 makes the capture match a float32 reference
// more closely at twice the cache memory.
const (
	KVF16 KVType = "f16"
	KVF32 KVType = "f32"
)

// ContextOptions configures a context. Zero values take the defaults noted.
type ContextOptions struct {
	NCtx    int    // KV cache size in tokens, shared by all sequences (default: min(n_ctx_train, 4096))
	NBatch  int    // tokens submitted per llama_decode (default 512, at most NCtx)
	NUBatch int    // tokens computed per graph evaluation (default NBatch)
	Threads int    // CPU threads (default: the number of CPUs)
	NSeq    int    // sequences decoded together (default 16)
	KVType  KVType // default f16
	// FlashAttn enables flash attention (off by default: it computes in F16 on the CPU).
	FlashAttn bool
}

// Context is an inference context: a KV cache, a batch and the capture state. A Context is
// NOT safe for concurrent use; use one per goroutine (calls from a second goroutine while one
// is running fail with an error rather than corrupting state).
type Context struct {
	busy  sync.Mutex
	m     *Model
	c     *C.struct_llama_context
	cap   *C.probe_capture
	batch C.struct_llama_batch
	opts  ContextOptions
	// pool is the CPU thread pool every graph computation of the context reuses: without
	// one, ggml starts and joins its threads for every computation — twice per decode when a
	// capture splits the graph.
	pool *C.struct_ggml_threadpool
	// decodes counts the context's llama_decode calls (for tests of how capture packs them).
	decodes int
}

// NewContext makes a context for the model.
func NewContext(m *Model, opts ContextOptions) (*Context, error) {
	if err := m.acquire(); err != nil {
		return nil, fmt.Errorf("new context: %w", err)
	}
	defer m.release()
	if opts.NCtx == 0 {
		opts.NCtx = min(max(m.info.CtxTrain, 64), 4096)
	}
	if opts.NBatch == 0 {
		opts.NBatch = min(512, opts.NCtx)
	}
	if opts.NUBatch == 0 {
		opts.NUBatch = opts.NBatch
	}
	if opts.Threads == 0 {
		opts.Threads = runtime.NumCPU()
	}
	if opts.NSeq == 0 {
		opts.NSeq = 16
	}
	if opts.KVType == "" {
		opts.KVType = KVF16
	}
	switch {
	case opts.NCtx < 1 || opts.NCtx > 1<<20:
		return nil, fmt.Errorf("new context: context size %d out of range", opts.NCtx)
	case opts.NBatch < 1 || opts.NBatch > opts.NCtx:
		return nil, fmt.Errorf("new context: batch size %d must be between 1 and the context size %d", opts.NBatch, opts.NCtx)
	case opts.NUBatch < 1 || opts.NUBatch > opts.NBatch:
		return nil, fmt.Errorf("new context: micro-batch size %d must be between 1 and the batch size %d", opts.NUBatch, opts.NBatch)
	case opts.Threads < 1 || opts.Threads > 512:
		return nil, fmt.Errorf("new context: %d threads out of range", opts.Threads)
	case opts.NSeq < 1 || opts.NSeq > 256:
		return nil, fmt.Errorf("new context: %d sequences out of range (1-256)", opts.NSeq)
	case opts.KVType != KVF16 && opts.KVType != KVF32:
		return nil, fmt.Errorf("new context: KV cache type %q (want f16 or f32)", opts.KVType)
	}
	p := C.llama_context_default_params()
	p.n_ctx = C.uint32_t(opts.NCtx)
	p.n_batch = C.uint32_t(opts.NBatch)
	p.n_ubatch = C.uint32_t(opts.NUBatch)
	p.n_seq_max = C.uint32_t(opts.NSeq)
	p.n_threads = C.int32_t(opts.Threads)
	p.n_threads_batch = C.int32_t(opts.Threads)
	// One KV stream keeps the batch in order through split_simple, so captured rows follow
	// batch order (docs/DESIGN.md §3).
	p.kv_unified = true
	p.no_perf = true
	p.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_DISABLED
	if opts.FlashAttn {
		p.flash_attn_type = C.LLAMA_FLASH_ATTN_TYPE_ENABLED
	}
	if opts.KVType == KVF32 {
		p.type_k = C.GGML_TYPE_F32
		p.type_v = C.GGML_TYPE_F32
	}
	ctx := &Context{m: m, opts: opts}
	ctx.cap = (*C.probe_capture)(C.calloc(1, C.size_t(unsafe.Sizeof(C.probe_capture{}))))
	if ctx.cap == nil {
		return nil, errors.New("new context: out of memory")
	}
	ctx.cap.n_layer = C.int(m.info.Layers)
	reason := withLogError(func() { ctx.c = C.probe_new_context(m.c, p, ctx.cap) })
	if ctx.c == nil {
		C.free(unsafe.Pointer(ctx.cap))
		if reason == "" {
			reason = "llama.cpp could not create it"
		}
		return nil, fmt.Errorf("new context: %s", reason)
	}
	ctx.batch = C.llama_batch_init(C.int32_t(opts.NBatch), 0, 1)
	if ctx.pool = C.probe_threadpool(C.int(opts.Threads)); ctx.pool != nil {
		C.llama_attach_threadpool(ctx.c, ctx.pool, ctx.pool)
	}
	m.contexts.Add(1)
	return ctx, nil
}

// Options returns the options the context was made with, defaults filled in.
func (c *Context) Options() ContextOptions { return c.opts }

// Model returns the model the context runs.
func (c *Context) Model() *Model { return c.m }

// Close frees the context.
func (c *Context) Close() error {
	c.busy.Lock()
	defer c.busy.Unlock()
	if c.c == nil {
		return nil
	}
	C.llama_batch_free(c.batch)
	C.probe_llama_free(c.c)
	if c.pool != nil {
		C.ggml_threadpool_free(c.pool) // after the context, which computes on it
		c.pool = nil
	}
	C.probe_capture_free(c.cap)
	C.free(unsafe.Pointer(c.cap))
	c.c, c.cap = nil, nil
	c.m.contexts.Add(-1)
	return nil
}

// enter marks the context busy; it fails if another goroutine is using it or it is closed.
func (c *Context) enter() error {
	if !c.busy.TryLock() {
		return errors.New("context is in use by another goroutine (a Context is single-goroutine)")
	}
	if c.c == nil {
		c.busy.Unlock()
		return errors.New("context is closed")
	}
	return nil
}

func (c *Context) leave() { c.busy.Unlock() }

// begin enters the context and takes the model's read lock; end releases both.
func (c *Context) begin() (end func(), err error) {
	if err := c.enter(); err != nil {
		return nil, err
	}
	if err := c.m.acquire(); err != nil {
		c.leave()
		return nil, err
	}
	return func() { c.m.release(); c.leave() }, nil
}

// batchToken is one entry of a llama_batch.
type batchToken struct {
	token  int32
	pos    int32
	seq    int32
	logits bool
}

// decode submits tokens (at most NBatch) to llama_decode.
func (c *Context) decode(toks []batchToken) error {
	b := &c.batch
	n := len(toks)
	tokS := unsafe.Slice(b.token, n)
	posS := unsafe.Slice(b.pos, n)
	nSeqS := unsafe.Slice(b.n_seq_id, n)
	seqS := unsafe.Slice(b.seq_id, n)
	logS := unsafe.Slice(b.logits, n)
	for i, t := range toks {
		tokS[i] = C.llama_token(t.token)
		posS[i] = C.llama_pos(t.pos)
		nSeqS[i] = 1
		*seqS[i] = C.llama_seq_id(t.seq)
		logS[i] = 0
		if t.logits {
			logS[i] = 1
		}
	}
	b.n_tokens = C.int32_t(n)
	c.decodes++
	var rc C.int32_t
	reason := withLogError(func() { rc = C.llama_decode(c.c, *b) })
	if rc != 0 {
		if reason == "" {
			reason = fmt.Sprintf("status %d", int(rc))
		}
		return fmt.Errorf("llama_decode: %s", reason)
	}
	return nil
}

// clearMemory empties the KV cache.
func (c *Context) clearMemory() {
	C.llama_memory_clear(C.llama_get_memory(c.c), C.bool(true))
}
