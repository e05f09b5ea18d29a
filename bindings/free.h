#ifndef PROBE_FREE_H
#define PROBE_FREE_H

#include "llama.h"
#include "ggml-backend.h"

// probe_llama_free frees a context as llama_free does, but frees its backends after its
// scheduler (see free.c).
void probe_llama_free(struct llama_context * ctx);

// probe_init_from_model is llama_init_from_model with the same deferral, for a context whose
// creation fails half-way.
struct llama_context * probe_init_from_model(struct llama_model * model, struct llama_context_params params);

#endif
