#include "free.h"

// llama.cpp as the ollama module vendors it frees a context's backends before its scheduler
// (llama_context declares `sched` before `backends`, and members are destroyed in reverse),
// and the scheduler's free, patched by ollama, then calls each backend's reset function: on
// a freed CUDA backend that is a use-after-free, and the process crashes in llama_free.
// probe links with -Wl,--wrap=ggml_backend_free (llama.go): while probe_llama_free runs, the
// backends llama_free lets go of are kept, and freed once the scheduler is gone.

#define PROBE_MAX_DEFERRED 64

void __real_ggml_backend_free(ggml_backend_t backend);

static _Thread_local int defer_free;
static _Thread_local ggml_backend_t deferred[PROBE_MAX_DEFERRED];
static _Thread_local int n_deferred;

void __wrap_ggml_backend_free(ggml_backend_t backend) {
	if (defer_free && backend != NULL && n_deferred < PROBE_MAX_DEFERRED) {
		deferred[n_deferred++] = backend;
		return;
	}
	__real_ggml_backend_free(backend);
}

static void free_deferred(void) {
	defer_free = 0;
	for (int i = 0; i < n_deferred; i++) {
		__real_ggml_backend_free(deferred[i]);
	}
	n_deferred = 0;
}

void probe_llama_free(struct llama_context * ctx) {
	defer_free = 1;
	llama_free(ctx);
	free_deferred();
}

// A context whose creation fails after its scheduler exists (a compute buffer the GPU cannot
// hold, say) is destroyed inside llama_init_from_model, in the same order: the same deferral.
struct llama_context * probe_init_from_model(struct llama_model * model, struct llama_context_params params) {
	defer_free = 1;
	struct llama_context * ctx = llama_init_from_model(model, params);
	free_deferred();
	return ctx;
}
