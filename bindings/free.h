#ifndef PROBE_FREE_H
#define PROBE_FREE_H

#include "llama.h"
#include "ggml-backend.h"

// probe_llama_free frees a context as llama_free does, but frees its backends after its
// scheduler (see free.c).
void probe_llama_free(struct llama_context * ctx);

#endif
