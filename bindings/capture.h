// Capture of named graph tensors through llama.cpp's cb_eval callback. The callback is C so that
// no Go call happens per graph node; it copies the requested tensors' rows into malloc'ed
// buffers that the Go side reads after llama_decode returns.
#ifndef PROBE_CAPTURE_H
#define PROBE_CAPTURE_H

#include <stdbool.h>
#include <stdint.h>
#include "ggml.h"

#define PROBE_MAX_POINTS 4   // residual, attn_out, mlp_out, attn_heads
#define PROBE_MAX_LAYERS 512

typedef struct {
	float * data;     // rows × ne0 floats
	int64_t cap;      // capacity in floats
	int64_t rows;     // rows appended since the last reset
	int64_t ne0;      // row width seen (0 until the first row)
} probe_slot;

typedef struct {
	int n_layer;
	// names[p] is the graph name of point p in this model ("l_out" for tensors "l_out-N"), set
	// from Go (probe_capture_set_name); "" when the point is not requested.
	char names[PROBE_MAX_POINTS][GGML_MAX_NAME];
	// want[p][l] is the slot index + 1 for point p at layer l, 0 when not requested.
	int want[PROBE_MAX_POINTS][PROBE_MAX_LAYERS];
	probe_slot * slots;
	int n_slots;        // slots in use
	int slot_cap;       // slots allocated (buffers kept for reuse)
	int error;          // 0 ok; 1 unsupported type; 2 non-contiguous; 3 width changed; 4 out of memory
	char error_name[GGML_MAX_NAME];
	int64_t matched;    // tensors copied since the last reset
	// stop_early, set from Go for a request that reads no logits, ends each graph computation
	// once every requested tensor of it was copied (the callback returns false: ggml skips the
	// rest of the graph — later layers, the output norm and the vocabulary projection);
	// stopped counts the computations ended so. asked counts the nodes the scheduler asked
	// about (the nodes it reached) since the last reset.
	int stop_early;
	int64_t stopped;
	int64_t asked;
} probe_capture;

bool probe_capture_cb(struct ggml_tensor * t, bool ask, void * user_data);

// probe_split_name splits a graph tensor name "<name>-<layer>" as llama.cpp writes them: a
// non-empty name, a dash, and the layer in decimal without leading zeros, below
// PROBE_MAX_LAYERS, ending the string. It returns the length of <name> and sets *layer, or
// returns -1 for any other name ("l_out-3 (reshaped)", "result_norm", "l_out-03").
int probe_split_name(const char * name, int * layer);

// probe_capture_match returns the point whose graph name a tensor name carries, setting
// *layer, or -1.
int probe_capture_match(const probe_capture * c, const char * name, int * layer);

// probe_capture_clear drops the request and the name table (buffers are kept for reuse);
// probe_capture_set_name sets point's graph name (0 ok, -1 bad point or name);
// probe_capture_add asks for one point at one layer and returns its slot index (slots are
// numbered in call order).
void probe_capture_clear(probe_capture * c);
int probe_capture_set_name(probe_capture * c, int point, const char * name);
int probe_capture_add(probe_capture * c, int point, int layer);
int probe_capture_reserve(probe_capture * c, int64_t rows, int64_t ne0);
void probe_capture_reset_rows(probe_capture * c);
void probe_capture_free(probe_capture * c);

// Discovery of the per-layer tensors a model's graph names: probe_record_cb, as a context's
// cb_eval, records in the ask phase every node whose name splits as "<name>-<layer>", with its
// ne[0], and asks for nothing, so the graph is computed as without a callback.
typedef struct {
	char name[GGML_MAX_NAME]; // the <name> part
	int layer;
	int64_t ne0;
} probe_seen;

typedef struct {
	probe_seen * seen;
	int n;
	int cap;
	int oom;  // a record was dropped for lack of memory
} probe_record;

bool probe_record_cb(struct ggml_tensor * t, bool ask, void * user_data);
void probe_record_free(probe_record * r);

#endif
