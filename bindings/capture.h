// Capture of named graph tensors through llama.cpp's cb_eval callback. The callback is C so that
// no Go call happens per graph node; it copies the requested tensors' rows into malloc'ed
// buffers that the Go side reads after llama_decode returns.
#ifndef PROBE_CAPTURE_H
#define PROBE_CAPTURE_H

#include <stdbool.h>
#include <stdint.h>
#include "ggml.h"

#define PROBE_MAX_POINTS 3   // l_out, attn_out, ffn_out
#define PROBE_MAX_LAYERS 512

typedef struct {
	float * data;     // rows × ne0 floats
	int64_t cap;      // capacity in floats
	int64_t rows;     // rows appended since the last reset
	int64_t ne0;      // row width seen (0 until the first row)
} probe_slot;

typedef struct {
	int n_layer;
	// want[p][l] is the slot index + 1 for point p at layer l, 0 when not requested.
	int want[PROBE_MAX_POINTS][PROBE_MAX_LAYERS];
	probe_slot * slots;
	int n_slots;        // slots in use
	int slot_cap;       // slots allocated (buffers kept for reuse)
	int error;          // 0 ok; 1 unsupported type; 2 non-contiguous; 3 width changed; 4 out of memory
	char error_name[GGML_MAX_NAME];
	int64_t matched;    // tensors copied since the last reset
} probe_capture;

bool probe_capture_cb(struct ggml_tensor * t, bool ask, void * user_data);

// probe_capture_clear drops the request (buffers are kept for reuse); probe_capture_add asks
// for one point at one layer and returns its slot index (slots are numbered in call order).
void probe_capture_clear(probe_capture * c);
int probe_capture_add(probe_capture * c, int point, int layer);
int probe_capture_reserve(probe_capture * c, int64_t rows, int64_t ne0);
void probe_capture_reset_rows(probe_capture * c);
void probe_capture_free(probe_capture * c);

#endif
