// A llama-architecture model built as a ggml graph without a KV cache, with its backward pass
// and an AdamW step. The Go side owns the data: it fills the inputs of each batch and reads
// weights, gradients and logits back by copy.
#ifndef PROBE_TRAINER_H
#define PROBE_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
	int n_embd, n_layer, n_head, n_head_kv, n_ff, n_vocab;
	float rope_theta, norm_eps;
	int seq_len;  // T: tokens per packed row
	int n_rows;   // B: rows per batch
	int n_sel;    // positions whose next token is predicted (the loss positions) per batch
	int n_threads;
	bool grad_only; // unused: every trainer can compute gradients without a step
	bool rms_norm_fix; // apply the RMS_NORM_BACK in-place work-around (docs/DESIGN.md §5); false only in tests
} probe_train_config;

typedef struct probe_trainer probe_trainer;

// probe_trainer_new builds the graph and the optimizer; NULL on failure with err filled.
probe_trainer * probe_trainer_new(const probe_train_config * cfg, char * err, int err_len);
void probe_trainer_free(probe_trainer * t);

int probe_trainer_n_params(const probe_trainer * t);
const char * probe_trainer_param_name(const probe_trainer * t, int i);
int64_t probe_trainer_param_size(const probe_trainer * t, int i);
void probe_trainer_set_param(probe_trainer * t, int i, const float * src);
void probe_trainer_get_param(const probe_trainer * t, int i, float * dst);
// probe_trainer_get_grad copies the gradient of parameter i computed by the last probe_trainer_grad.
void probe_trainer_get_grad(probe_trainer * t, int i, float * dst);

// probe_trainer_set_batch sets the inputs of the next evaluation: tokens, positions and the
// attention mask of n_rows × seq_len tokens (mask: seq_len × seq_len per row, 0 or -inf), the
// flat indices of the n_sel loss positions, and each one's target token.
void probe_trainer_set_batch(probe_trainer * t, const int32_t * tokens, const int32_t * pos, const float * mask,
                             const int32_t * sel, const int32_t * targets);

// probe_trainer_step runs forward, backward and one AdamW step with the given learning rate
// and weight decay; returns the loss (mean cross-entropy over the loss positions) and the
// number of correct argmax predictions among the first n_real loss positions (the rest repeat
// them to fill the static shape) in *ncorrect.
float probe_trainer_step(probe_trainer * t, float lr, float wd, int n_real, int64_t * ncorrect);
// probe_trainer_forward evaluates the loss without changing anything; logits (n_vocab × n_sel)
// are copied to dst when it is not NULL.
float probe_trainer_forward(probe_trainer * t, float * logits);
// probe_trainer_grad computes the gradients of the loss without a step, and returns the loss.
float probe_trainer_grad(probe_trainer * t);

#endif
