#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml-opt.h"
#include "trainer.h"

#define MAX_PARAMS 512

struct probe_trainer {
	probe_train_config cfg;
	ggml_backend_t backend;
	ggml_backend_sched_t sched;
	struct ggml_context * ctx_static;  // parameters and inputs, allocated once
	struct ggml_context * ctx_compute; // the graph, allocated by ggml-opt
	ggml_backend_buffer_t buf_static;
	ggml_opt_context_t opt;
	struct ggml_opt_optimizer_params opt_pars;

	struct ggml_tensor * tokens;  // I32 [T*B]: the opt "inputs"
	struct ggml_tensor * pos;     // I32 [T*B]
	struct ggml_tensor * mask;    // F32 [T, T, 1, B]
	struct ggml_tensor * sel;     // I32 [n_sel]
	struct ggml_tensor * logits;  // F32 [V, n_sel]: the opt "outputs", a view of logits_buf
	struct ggml_tensor * logits_buf; // static copy of the logits, readable after an evaluation

	int n_params;
	struct ggml_tensor * params[MAX_PARAMS];
	float * onehot; // V × n_sel staging for labels
	int64_t n_evals; // evaluations so far: ggml-opt advances its accumulation counter on each
};

static struct ggml_opt_optimizer_params get_pars(void * ud) {
	return ((probe_trainer *) ud)->opt_pars;
}

static struct ggml_tensor * param(probe_trainer * t, const char * name, int64_t ne0, int64_t ne1) {
	struct ggml_tensor * x = ne1 > 0 ? ggml_new_tensor_2d(t->ctx_static, GGML_TYPE_F32, ne0, ne1)
	                                 : ggml_new_tensor_1d(t->ctx_static, GGML_TYPE_F32, ne0);
	ggml_set_name(x, name);
	ggml_set_param(x);
	t->params[t->n_params++] = x;
	return x;
}

static struct ggml_tensor * norm(probe_trainer * t, struct ggml_tensor * x, struct ggml_tensor * w) {
	return ggml_mul(t->ctx_compute, ggml_rms_norm(t->ctx_compute, x, t->cfg.norm_eps), w);
}

// build makes the forward graph; it mirrors llama.cpp's llm_build_llama for one token batch
// without a KV cache: every row attends to itself under the mask.
static struct ggml_tensor * build(probe_trainer * t, struct ggml_tensor ** blk) {
	const probe_train_config * c = &t->cfg;
	struct ggml_context * ctx = t->ctx_compute;
	const int E = c->n_embd, H = c->n_head, Hkv = c->n_head_kv, hd = E / H, T = c->seq_len, B = c->n_rows;
	const float scale = 1.0f / sqrtf((float) hd);

	struct ggml_tensor * x = ggml_get_rows(ctx, blk[0], t->tokens); // [E, T*B]
	int p = 1;
	for (int l = 0; l < c->n_layer; l++) {
		struct ggml_tensor * attn_norm = blk[p++], * wq = blk[p++], * wk = blk[p++], * wv = blk[p++], * wo = blk[p++];
		struct ggml_tensor * ffn_norm = blk[p++], * wg = blk[p++], * wu = blk[p++], * wd = blk[p++];

		struct ggml_tensor * h = norm(t, x, attn_norm);
		struct ggml_tensor * q = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, wq, h), hd, H, T * B);
		struct ggml_tensor * k = ggml_reshape_3d(ctx, ggml_mul_mat(ctx, wk, h), hd, Hkv, T * B);
		struct ggml_tensor * v = ggml_mul_mat(ctx, wv, h);
		q = ggml_rope_ext(ctx, q, t->pos, NULL, hd, 0, 0, c->rope_theta, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
		k = ggml_rope_ext(ctx, k, t->pos, NULL, hd, 0, 0, c->rope_theta, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
		q = ggml_permute(ctx, ggml_reshape_4d(ctx, q, hd, H, T, B), 0, 2, 1, 3);   // [hd, T, H, B]
		k = ggml_permute(ctx, ggml_reshape_4d(ctx, k, hd, Hkv, T, B), 0, 2, 1, 3); // [hd, T, Hkv, B]
		struct ggml_tensor * kq = ggml_mul_mat(ctx, k, q);                          // [T, T, H, B]
		kq = ggml_soft_max_ext(ctx, kq, t->mask, scale, 0.0f);
		v = ggml_cont(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, v, hd, Hkv, T, B), 1, 2, 0, 3)); // [T, hd, Hkv, B]
		struct ggml_tensor * kqv = ggml_mul_mat(ctx, v, kq);                       // [hd, T, H, B]
		struct ggml_tensor * merged = ggml_cont(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3)); // [hd, H, T, B]
		merged = ggml_reshape_2d(ctx, merged, E, T * B);
		x = ggml_add(ctx, x, ggml_mul_mat(ctx, wo, merged));

		h = norm(t, x, ffn_norm);
		struct ggml_tensor * act = ggml_swiglu_split(ctx, ggml_mul_mat(ctx, wg, h), ggml_mul_mat(ctx, wu, h));
		x = ggml_add(ctx, x, ggml_mul_mat(ctx, wd, act));
	}
	struct ggml_tensor * out_norm = blk[p++], * out = blk[p++];
	x = norm(t, x, out_norm);
	x = ggml_get_rows(ctx, x, t->sel); // [E, n_sel]: the loss positions only
	return ggml_mul_mat(ctx, out, x);  // [V, n_sel]
}

probe_trainer * probe_trainer_new(const probe_train_config * cfg, char * err, int err_len) {
	const probe_train_config * c = cfg;
	if (c->n_embd % c->n_head || c->n_head % c->n_head_kv || (c->n_embd / c->n_head) % 2 || c->n_layer < 1 ||
	    c->seq_len < 2 || c->n_rows < 1 || c->n_sel < 1 || c->n_sel > c->seq_len * c->n_rows) {
		snprintf(err, err_len, "invalid trainer configuration");
		return NULL;
	}
	if (9 * c->n_layer + 3 > MAX_PARAMS) {
		snprintf(err, err_len, "too many layers");
		return NULL;
	}
	probe_trainer * t = calloc(1, sizeof(probe_trainer));
	t->cfg = *cfg;
	const int E = c->n_embd, V = c->n_vocab, F = c->n_ff, T = c->seq_len, B = c->n_rows;
	const int kvd = c->n_head_kv * (E / c->n_head);

	struct ggml_init_params sp = {(size_t) (MAX_PARAMS + 8) * ggml_tensor_overhead(), NULL, true};
	t->ctx_static = ggml_init(sp);
	struct ggml_tensor * blk[MAX_PARAMS];
	int p = 0;
	char name[64];
	blk[p++] = param(t, "token_embd.weight", E, V);
	for (int l = 0; l < c->n_layer; l++) {
		snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);   blk[p++] = param(t, name, E, 0);
		snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);      blk[p++] = param(t, name, E, E);
		snprintf(name, sizeof name, "blk.%d.attn_k.weight", l);      blk[p++] = param(t, name, E, kvd);
		snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);      blk[p++] = param(t, name, E, kvd);
		snprintf(name, sizeof name, "blk.%d.attn_output.weight", l); blk[p++] = param(t, name, E, E);
		snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);    blk[p++] = param(t, name, E, 0);
		snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", l);    blk[p++] = param(t, name, E, F);
		snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);      blk[p++] = param(t, name, E, F);
		snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);    blk[p++] = param(t, name, F, E);
	}
	blk[p++] = param(t, "output_norm.weight", E, 0);
	blk[p++] = param(t, "output.weight", E, V);

	t->tokens = ggml_new_tensor_1d(t->ctx_static, GGML_TYPE_I32, T * B);
	ggml_set_name(t->tokens, "tokens");
	t->pos = ggml_new_tensor_1d(t->ctx_static, GGML_TYPE_I32, T * B);
	ggml_set_name(t->pos, "pos");
	ggml_set_input(t->pos);
	t->mask = ggml_new_tensor_4d(t->ctx_static, GGML_TYPE_F32, T, T, 1, B);
	ggml_set_name(t->mask, "mask");
	ggml_set_input(t->mask);
	t->sel = ggml_new_tensor_1d(t->ctx_static, GGML_TYPE_I32, c->n_sel);
	ggml_set_name(t->sel, "sel");
	ggml_set_input(t->sel);
	t->logits_buf = ggml_new_tensor_2d(t->ctx_static, GGML_TYPE_F32, V, c->n_sel);
	ggml_set_name(t->logits_buf, "logits_buf");

	t->backend = ggml_backend_cpu_init();
	if (t->backend == NULL) {
		snprintf(err, err_len, "cannot initialise the CPU backend");
		probe_trainer_free(t);
		return NULL;
	}
	ggml_backend_cpu_set_n_threads(t->backend, c->n_threads);
	t->buf_static = ggml_backend_alloc_ctx_tensors(t->ctx_static, t->backend);
	if (t->buf_static == NULL) {
		snprintf(err, err_len, "out of memory for %d parameters", p);
		probe_trainer_free(t);
		return NULL;
	}
	ggml_backend_buffer_clear(t->buf_static, 0);

	size_t graph_nodes = GGML_DEFAULT_GRAPH_SIZE;
	struct ggml_init_params cp = {4 * graph_nodes * ggml_tensor_overhead() + 4 * ggml_graph_overhead_custom(graph_nodes, true), NULL, true};
	t->ctx_compute = ggml_init(cp);
	// ggml-opt computes a copy of the graph, so the logits are written into a static tensor
	// through a CPY (its gradient passes straight through) to be readable afterwards.
	t->logits = ggml_cpy(t->ctx_compute, build(t, blk), t->logits_buf);
	ggml_set_name(t->logits, "logits");

	ggml_backend_t backends[1] = {t->backend};
	t->sched = ggml_backend_sched_new(backends, NULL, 1, 4 * graph_nodes, false, false);

	struct ggml_opt_params op = ggml_opt_default_params(t->sched, GGML_OPT_LOSS_TYPE_CROSS_ENTROPY);
	op.ctx_compute = t->ctx_compute;
	op.inputs = t->tokens;
	op.outputs = t->logits;
	// A static GRAD-only build asserts in ggml_opt_build (it allocates, then falls through to
	// the optimizer branch). Gradient checks use an OPT build with an accumulation period of 2
	// instead: the first backward pass of each period only accumulates gradients, readable with
	// ggml_opt_grad_acc. The cross-entropy is then scaled by 1/2, consistently for the loss and
	// its gradients.
	op.build_type = GGML_OPT_BUILD_TYPE_OPT;
	op.opt_period = c->grad_only ? 2 : 1;
	op.get_opt_pars = get_pars;
	op.get_opt_pars_ud = t;
	t->opt_pars = ggml_opt_get_default_optimizer_params(NULL);
	t->opt = ggml_opt_init(op);

	// ggml bug work-around (DESIGN.md): the allocator may run RMS_NORM_BACK in place over its
	// incoming gradient, which the CPU kernel overwrites before reading; marking that gradient
	// as an output keeps it in a buffer of its own.
	if (c->rms_norm_fix) {
		for (struct ggml_tensor * n = ggml_get_first_tensor(t->ctx_compute); n != NULL; n = ggml_get_next_tensor(t->ctx_compute, n)) {
			if (n->op == GGML_OP_RMS_NORM_BACK && n->src[0] != NULL) {
				ggml_set_output(n->src[0]);
			}
		}
	}
	t->onehot = calloc((size_t) V * c->n_sel, sizeof(float));
	return t;
}

void probe_trainer_free(probe_trainer * t) {
	if (t == NULL) {
		return;
	}
	ggml_opt_free(t->opt);
	if (t->sched) ggml_backend_sched_free(t->sched);
	if (t->ctx_compute) ggml_free(t->ctx_compute);
	if (t->buf_static) ggml_backend_buffer_free(t->buf_static);
	if (t->ctx_static) ggml_free(t->ctx_static);
	if (t->backend) ggml_backend_free(t->backend);
	free(t->onehot);
	free(t);
}

int probe_trainer_n_params(const probe_trainer * t) { return t->n_params; }
const char * probe_trainer_param_name(const probe_trainer * t, int i) { return ggml_get_name(t->params[i]); }
int64_t probe_trainer_param_size(const probe_trainer * t, int i) { return ggml_nelements(t->params[i]); }

void probe_trainer_set_param(probe_trainer * t, int i, const float * src) {
	ggml_backend_tensor_set(t->params[i], src, 0, ggml_nbytes(t->params[i]));
}

void probe_trainer_get_param(const probe_trainer * t, int i, float * dst) {
	ggml_backend_tensor_get(t->params[i], dst, 0, ggml_nbytes(t->params[i]));
}

void probe_trainer_get_grad(probe_trainer * t, int i, float * dst) {
	struct ggml_tensor * g = ggml_opt_grad_acc(t->opt, t->params[i]);
	if (g == NULL) {
		memset(dst, 0, ggml_nbytes(t->params[i]));
		return;
	}
	ggml_backend_tensor_get(g, dst, 0, ggml_nbytes(g));
	// The graph's loss is scaled by 1/opt_period (2 for gradient checks) while the reported loss
	// is not: scale the gradient back to the reported loss's.
	const int64_t n = ggml_nelements(g);
	for (int64_t j = 0; j < n; j++) {
		dst[j] *= 2.0f;
	}
}

void probe_trainer_set_batch(probe_trainer * t, const int32_t * tokens, const int32_t * pos, const float * mask,
                             const int32_t * sel, const int32_t * targets) {
	const int V = t->cfg.n_vocab, S = t->cfg.n_sel;
	ggml_backend_tensor_set(t->tokens, tokens, 0, ggml_nbytes(t->tokens));
	ggml_backend_tensor_set(t->pos, pos, 0, ggml_nbytes(t->pos));
	ggml_backend_tensor_set(t->mask, mask, 0, ggml_nbytes(t->mask));
	ggml_backend_tensor_set(t->sel, sel, 0, ggml_nbytes(t->sel));
	memset(t->onehot, 0, (size_t) V * S * sizeof(float));
	for (int i = 0; i < S; i++) {
		t->onehot[(size_t) i * V + targets[i]] = 1.0f;
	}
	ggml_backend_tensor_set(ggml_opt_labels(t->opt), t->onehot, 0, (size_t) V * S * sizeof(float));
}

static float eval(probe_trainer * t, bool backward, int64_t * ncorrect) {
	ggml_opt_result_t r = ggml_opt_result_init();
	ggml_opt_alloc(t->opt, backward);
	ggml_opt_eval(t->opt, r);
	t->n_evals++;
	double loss = 0, unc = 0, acc = 0;
	ggml_opt_result_loss(r, &loss, &unc);
	if (ncorrect != NULL) {
		int64_t n = 0;
		ggml_opt_result_ndata(r, &n);
		ggml_opt_result_accuracy(r, &acc, NULL);
		*ncorrect = (int64_t) llround(acc * (double) n);
	}
	ggml_opt_result_free(r);
	return (float) loss;
}

float probe_trainer_step(probe_trainer * t, float lr, float wd, int64_t * ncorrect) {
	t->opt_pars.adamw.alpha = lr;
	t->opt_pars.adamw.wd = wd;
	t->opt_pars.adamw.beta2 = 0.99f;
	return eval(t, true, ncorrect);
}

float probe_trainer_forward(probe_trainer * t, float * logits) {
	float loss = eval(t, false, NULL);
	if (logits != NULL) {
		ggml_backend_tensor_get(t->logits_buf, logits, 0, ggml_nbytes(t->logits_buf));
	}
	return loss;
}

float probe_trainer_grad(probe_trainer * t) {
	if (!t->cfg.grad_only) {
		return NAN;
	}
	if (t->n_evals % 2 == 1) {
		eval(t, false, NULL); // start a new accumulation period, so this pass does not step
	}
	ggml_opt_reset(t->opt, false);
	return eval(t, true, NULL);
}
