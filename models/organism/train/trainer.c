// The organism trainer: a llama forward pass, its backward pass written out op by op, and an
// AdamW step, as one static ggml graph.
//
// The backward pass is explicit rather than produced by ggml's automatic differentiation,
// because the automatic one turns every matrix product into two OUT_PROD ops, whose CPU
// kernel is a rank-1 update loop: 70% of a training step, about 3× slower than writing the
// same gradients as MUL_MATs of transposed copies, which use the tiled GEMM kernels. Every
// gradient is checked against finite differences in train_test.go.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "trainer.h"

#define MAX_PARAMS 512
#define GRAPH_SIZE 16384

typedef struct {
	struct ggml_tensor *x, *a1, *h1T, *qp, *kp, *vq, *P, *merged, *x2, *a2, *h2T, *g, *sg, *u, *s;
} layer_acts;

enum { MODE_FORWARD, MODE_GRAD, MODE_TRAIN };

typedef struct {
	struct ggml_context * ctx; // graph tensors, placed by galloc
	ggml_gallocr_t galloc;
	struct ggml_cgraph * graph;
	struct ggml_tensor * logits; // [V, n_sel]
	struct ggml_tensor * loss;   // scalar
	struct ggml_tensor * pred;   // I32 [n_sel]
	struct ggml_tensor * grads[MAX_PARAMS];
} graph_inst;

struct probe_trainer {
	probe_train_config cfg;
	ggml_backend_t backend;
	struct ggml_context * ctx_static;  // parameters, optimizer moments and inputs
	ggml_backend_buffer_t buf_static;

	struct ggml_tensor * tokens;  // I32 [T*B]
	struct ggml_tensor * pos;     // I32 [T*B]
	struct ggml_tensor * mask;    // F32 [T, T, 1, B]
	struct ggml_tensor * sel;     // I32 [n_sel]
	struct ggml_tensor * labels;  // F32 [V, n_sel], one-hot
	struct ggml_tensor * one;     // F32 scalar 1: the loss's own gradient
	struct ggml_tensor * adamw;   // F32 [7]: alpha, beta1, beta2, eps, wd, 1/(1-beta1^t), 1/(1-beta2^t)

	int n_params;
	struct ggml_tensor * params[MAX_PARAMS];
	struct ggml_tensor * m[MAX_PARAMS];
	struct ggml_tensor * v[MAX_PARAMS];

	// One graph instance per mode, each with its own tensors and allocator: ggml's allocator
	// places a tensor only once (it skips tensors that already have data), so graphs that
	// shared tensors would overwrite each other's memory.
	graph_inst fwd, grad, train;

	float * onehot;   // V × n_sel staging
	int32_t * targets;
	int32_t * preds;
	int64_t iter;
};

static struct ggml_tensor * param(probe_trainer * t, const char * name, int64_t ne0, int64_t ne1) {
	struct ggml_tensor * x = ne1 > 0 ? ggml_new_tensor_2d(t->ctx_static, GGML_TYPE_F32, ne0, ne1)
	                                 : ggml_new_tensor_1d(t->ctx_static, GGML_TYPE_F32, ne0);
	ggml_set_name(x, name);
	ggml_set_param(x); // OPT_STEP_ADAMW asserts it; nothing is differentiated automatically
	int i = t->n_params++;
	t->params[i] = x;
	t->m[i] = ggml_dup_tensor(t->ctx_static, x);
	t->v[i] = ggml_dup_tensor(t->ctx_static, x);
	return x;
}

// materialize_kernel copies the F32 view a, whatever its strides, into the contiguous dst of
// the same shape: ggml's own CONT of a transposed view copies element by element with index
// arithmetic at about 0.2 GB/s, which made the transposes 30% of a training step. Here each
// thread copies 32×32 tiles (read along the source's contiguous direction, written within an
// L1-resident tile), or whole rows when the source's rows are contiguous.
static void materialize_kernel(struct ggml_tensor * dst, const struct ggml_tensor * a, int ith, int nth, void * userdata) {
	(void) userdata;
	enum { TB = 32 };
	const int64_t ne0 = a->ne[0], ne1 = a->ne[1], ne2 = a->ne[2], ne3 = a->ne[3];
	const size_t nb0 = a->nb[0], nb1 = a->nb[1], nb2 = a->nb[2], nb3 = a->nb[3];
	const int64_t tiles1 = (ne1 + TB - 1) / TB;
	const int64_t work = ne2 * ne3 * tiles1;
	for (int64_t w = ith; w < work; w += nth) {
		const int64_t t1 = w % tiles1, i2 = (w / tiles1) % ne2, i3 = w / (tiles1 * ne2);
		const int64_t i1a = t1 * TB, i1b = i1a + TB < ne1 ? i1a + TB : ne1;
		const char * src = (const char *) a->data + i2 * nb2 + i3 * nb3;
		float * out = (float *) dst->data + (i3 * ne2 + i2) * ne1 * ne0;
		if (nb0 == sizeof(float)) {
			for (int64_t i1 = i1a; i1 < i1b; i1++) {
				memcpy(out + i1 * ne0, src + i1 * nb1, (size_t) ne0 * sizeof(float));
			}
			continue;
		}
		for (int64_t i0a = 0; i0a < ne0; i0a += TB) {
			const int64_t i0b = i0a + TB < ne0 ? i0a + TB : ne0;
			for (int64_t i0 = i0a; i0 < i0b; i0++) {
				const char * s0 = src + i0 * nb0;
				for (int64_t i1 = i1a; i1 < i1b; i1++) {
					out[i1 * ne0 + i0] = *(const float *) (s0 + i1 * nb1);
				}
			}
		}
	}
}

// C_ materializes a view (a permutation or transposition) as a contiguous tensor.
static struct ggml_tensor * C_(struct ggml_context * ctx, struct ggml_tensor * x) {
	return ggml_map_custom1(ctx, x, materialize_kernel, GGML_N_TASKS_MAX, NULL);
}

// T_ returns a contiguous transpose of the first two dimensions.
static struct ggml_tensor * T_(struct ggml_context * ctx, struct ggml_tensor * x) {
	return C_(ctx, ggml_transpose(ctx, x));
}

// weight_grad is dW for y = W x (W [in, out], x [in, N], dy [out, N]): Σ_n x[:,n] dy[:,n]ᵀ,
// as a MUL_MAT of the transposes (xT [N, in] given).
static struct ggml_tensor * weight_grad(struct ggml_context * ctx, struct ggml_tensor * xT, struct ggml_tensor * dy) {
	return ggml_mul_mat(ctx, xT, T_(ctx, dy));
}

// input_grad is dx = Wᵀ dy for y = W x.
static struct ggml_tensor * input_grad(struct ggml_context * ctx, struct ggml_tensor * W, struct ggml_tensor * dy) {
	return ggml_mul_mat(ctx, T_(ctx, W), dy);
}

// norm_back differentiates h = RMSNorm(x) ⊙ w (a = RMSNorm(x)): dw = Σ_n dh ⊙ a, and dx through
// RMS_NORM_BACK. The incoming gradient is marked as an output: the allocator may otherwise run
// RMS_NORM_BACK in place over it, and the CPU kernel overwrites it before reading it (a silent
// ggml bug; docs/DESIGN.md §5).
static struct ggml_tensor * norm_back(probe_trainer * t, graph_inst * g, struct ggml_tensor * dh, struct ggml_tensor * x,
                                      struct ggml_tensor * a, struct ggml_tensor * w, int iw) {
	struct ggml_context * ctx = g->ctx;
	g->grads[iw] = ggml_repeat_back(ctx, ggml_mul(ctx, dh, a), w);
	struct ggml_tensor * da = ggml_mul(ctx, dh, w);
	if (t->cfg.rms_norm_fix) {
		ggml_set_output(da);
	}
	return ggml_rms_norm_back(ctx, da, x, t->cfg.norm_eps);
}

static struct ggml_tensor * rope(probe_trainer * t, struct ggml_context * ctx, struct ggml_tensor * x, bool back) {
	const probe_train_config * c = &t->cfg;
	const int hd = c->n_embd / c->n_head;
	if (back) {
		return ggml_rope_ext_back(ctx, x, t->pos, NULL, hd, 0, 0, c->rope_theta, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
	}
	return ggml_rope_ext(ctx, x, t->pos, NULL, hd, 0, 0, c->rope_theta, 1.0f, 0.0f, 1.0f, 32.0f, 1.0f);
}

// build makes the graph of one mode: the forward pass (loss, logits, predictions), then for
// MODE_GRAD and MODE_TRAIN the backward pass, then for MODE_TRAIN the AdamW steps.
static void build(probe_trainer * t, graph_inst * G, int mode) {
	const probe_train_config * c = &t->cfg;
	struct ggml_init_params cp = {GRAPH_SIZE * ggml_tensor_overhead() + ggml_graph_overhead_custom(GRAPH_SIZE, false), NULL, true};
	G->ctx = ggml_init(cp);
	G->galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(t->backend));
	G->graph = ggml_new_graph_custom(G->ctx, GRAPH_SIZE, false);
	struct ggml_context * ctx = G->ctx;
	const int E = c->n_embd, H = c->n_head, hd = E / H, T = c->seq_len, B = c->n_rows, N = T * B, L = c->n_layer;
	const float scale = 1.0f / sqrtf((float) hd);
	struct ggml_tensor ** P = t->params;
	layer_acts * acts = calloc((size_t) L, sizeof(layer_acts));

	// Forward.
	struct ggml_tensor * x = ggml_get_rows(ctx, P[0], t->tokens); // [E, N]
	for (int l = 0; l < L; l++) {
		struct ggml_tensor ** w = &P[1 + 9 * l];
		layer_acts * A = &acts[l];
		A->x = x;
		A->a1 = ggml_rms_norm(ctx, x, c->norm_eps);
		struct ggml_tensor * h1 = ggml_mul(ctx, A->a1, w[0]);
		A->h1T = T_(ctx, h1);
		struct ggml_tensor * q = rope(t, ctx, ggml_reshape_3d(ctx, ggml_mul_mat(ctx, w[1], h1), hd, H, N), false);
		struct ggml_tensor * k = rope(t, ctx, ggml_reshape_3d(ctx, ggml_mul_mat(ctx, w[2], h1), hd, H, N), false);
		struct ggml_tensor * v = ggml_reshape_4d(ctx, ggml_mul_mat(ctx, w[3], h1), hd, H, T, B);
		// Per-head layouts, materialised: MUL_MAT on permuted views runs at a sixth of the speed.
		A->qp = C_(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, q, hd, H, T, B), 0, 2, 1, 3)); // [hd, T, H, B]
		A->kp = C_(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, k, hd, H, T, B), 0, 2, 1, 3));
		A->vq = C_(ctx, ggml_permute(ctx, v, 0, 2, 1, 3));
		struct ggml_tensor * vp = C_(ctx, ggml_permute(ctx, v, 1, 2, 0, 3)); // [T, hd, H, B]
		A->P = ggml_soft_max_ext(ctx, ggml_mul_mat(ctx, A->kp, A->qp), t->mask, scale, 0.0f); // [Tk, Tq, H, B]
		struct ggml_tensor * O = ggml_mul_mat(ctx, vp, A->P); // [hd, Tq, H, B]
		A->merged = ggml_reshape_2d(ctx, C_(ctx, ggml_permute(ctx, O, 0, 2, 1, 3)), E, N);
		A->x2 = ggml_add(ctx, x, ggml_mul_mat(ctx, w[4], A->merged));
		A->a2 = ggml_rms_norm(ctx, A->x2, c->norm_eps);
		struct ggml_tensor * h2 = ggml_mul(ctx, A->a2, w[5]);
		A->h2T = T_(ctx, h2);
		A->g = ggml_mul_mat(ctx, w[6], h2);
		A->u = ggml_mul_mat(ctx, w[7], h2);
		A->sg = ggml_silu(ctx, A->g);
		A->s = ggml_mul(ctx, A->sg, A->u);
		x = ggml_add(ctx, A->x2, ggml_mul_mat(ctx, w[8], A->s));
	}
	const int io = 1 + 9 * L; // output_norm, then output
	struct ggml_tensor * af = ggml_rms_norm(ctx, x, c->norm_eps);
	struct ggml_tensor * hf = ggml_mul(ctx, af, P[io]);
	struct ggml_tensor * hsel = ggml_get_rows(ctx, hf, t->sel); // [E, n_sel]: loss positions only
	G->logits = ggml_mul_mat(ctx, P[io + 1], hsel);             // [V, n_sel]
	G->loss = ggml_cross_entropy_loss(ctx, G->logits, t->labels);
	G->pred = ggml_argmax(ctx, G->logits);
	ggml_set_output(G->logits);
	ggml_set_output(G->loss);
	ggml_set_output(G->pred);
	ggml_build_forward_expand(G->graph, G->loss);
	ggml_build_forward_expand(G->graph, G->pred);
	if (mode == MODE_FORWARD) {
		free(acts);
		return;
	}

	// Backward.
	struct ggml_tensor * dlogits = ggml_cross_entropy_loss_back(ctx, t->one, G->logits, t->labels);
	G->grads[io + 1] = weight_grad(ctx, T_(ctx, hsel), dlogits);
	struct ggml_tensor * dhf = ggml_get_rows_back(ctx, input_grad(ctx, P[io + 1], dlogits), t->sel, hf);
	struct ggml_tensor * dx = norm_back(t, G, dhf, x, af, P[io], io);
	for (int l = L - 1; l >= 0; l--) {
		struct ggml_tensor ** w = &P[1 + 9 * l];
		const int iw = 1 + 9 * l;
		layer_acts * A = &acts[l];
		// Feed-forward: x3 = x2 + Wd (SiLU(g) ⊙ u), g = Wg h2, u = Wu h2.
		G->grads[iw + 8] = weight_grad(ctx, T_(ctx, A->s), dx);
		struct ggml_tensor * ds = input_grad(ctx, w[8], dx);
		struct ggml_tensor * dg = ggml_silu_back(ctx, ggml_mul(ctx, ds, A->u), A->g);
		struct ggml_tensor * du = ggml_mul(ctx, ds, A->sg);
		G->grads[iw + 6] = weight_grad(ctx, A->h2T, dg);
		G->grads[iw + 7] = weight_grad(ctx, A->h2T, du);
		struct ggml_tensor * dh2 = ggml_add(ctx, input_grad(ctx, w[6], dg), input_grad(ctx, w[7], du));
		struct ggml_tensor * dx2 = ggml_add(ctx, dx, norm_back(t, G, dh2, A->x2, A->a2, w[5], iw + 5));
		// Attention: x2 = x + Wo merge(softmax(kᵀq·scale + mask) v).
		G->grads[iw + 4] = weight_grad(ctx, T_(ctx, A->merged), dx2);
		struct ggml_tensor * dmerged = input_grad(ctx, w[4], dx2);
		struct ggml_tensor * dO = C_(ctx, ggml_permute(ctx, ggml_reshape_4d(ctx, dmerged, hd, H, T, B), 0, 2, 1, 3));
		struct ggml_tensor * dP = ggml_mul_mat(ctx, A->vq, dO);               // [Tk, Tq, H, B]
		struct ggml_tensor * dvp = ggml_mul_mat(ctx, T_(ctx, A->P), T_(ctx, dO)); // [Tk, hd, H, B]
		struct ggml_tensor * dS = ggml_soft_max_ext_back(ctx, dP, A->P, scale, 0.0f);
		struct ggml_tensor * dqp = ggml_mul_mat(ctx, T_(ctx, A->kp), dS);         // [hd, Tq, H, B]
		struct ggml_tensor * dkp = ggml_mul_mat(ctx, T_(ctx, A->qp), T_(ctx, dS)); // [hd, Tk, H, B]
		struct ggml_tensor * dq = rope(t, ctx, ggml_reshape_3d(ctx, C_(ctx, ggml_permute(ctx, dqp, 0, 2, 1, 3)), hd, H, N), true);
		struct ggml_tensor * dk = rope(t, ctx, ggml_reshape_3d(ctx, C_(ctx, ggml_permute(ctx, dkp, 0, 2, 1, 3)), hd, H, N), true);
		struct ggml_tensor * dv = ggml_reshape_2d(ctx, C_(ctx, ggml_permute(ctx, dvp, 2, 0, 1, 3)), E, N);
		dq = ggml_reshape_2d(ctx, dq, E, N);
		dk = ggml_reshape_2d(ctx, dk, E, N);
		G->grads[iw + 1] = weight_grad(ctx, A->h1T, dq);
		G->grads[iw + 2] = weight_grad(ctx, A->h1T, dk);
		G->grads[iw + 3] = weight_grad(ctx, A->h1T, dv);
		struct ggml_tensor * dh1 = ggml_add(ctx, ggml_add(ctx, input_grad(ctx, w[1], dq), input_grad(ctx, w[2], dk)), input_grad(ctx, w[3], dv));
		dx = ggml_add(ctx, dx2, norm_back(t, G, dh1, A->x, A->a1, w[0], iw));
	}
	G->grads[0] = ggml_get_rows_back(ctx, dx, t->tokens, P[0]);

	for (int i = 0; i < t->n_params; i++) {
		ggml_set_output(G->grads[i]);
		ggml_build_forward_expand(G->graph, G->grads[i]);
	}
	if (mode == MODE_TRAIN) {
		// The optimizer steps come after every gradient in graph order, so no backward op reads
		// a weight that has already been updated.
		for (int i = 0; i < t->n_params; i++) {
			ggml_build_forward_expand(G->graph, ggml_opt_step_adamw(ctx, P[i], G->grads[i], t->m[i], t->v[i], t->adamw));
		}
	}
	free(acts);
}

probe_trainer * probe_trainer_new(const probe_train_config * cfg, char * err, int err_len) {
	const probe_train_config * c = cfg;
	if (c->n_embd % c->n_head || c->n_head != c->n_head_kv || (c->n_embd / c->n_head) % 2 || c->n_layer < 1 ||
	    c->seq_len < 2 || c->n_rows < 1 || c->n_sel < 1 || c->n_sel > c->seq_len * c->n_rows || c->n_vocab < 2) {
		snprintf(err, err_len, "invalid trainer configuration");
		return NULL;
	}
	if (9 * c->n_layer + 3 > MAX_PARAMS) {
		snprintf(err, err_len, "too many layers (at most %d)", (MAX_PARAMS - 3) / 9);
		return NULL;
	}
	probe_trainer * t = calloc(1, sizeof(probe_trainer));
	t->cfg = *cfg;
	const int E = c->n_embd, V = c->n_vocab, F = c->n_ff, T = c->seq_len, B = c->n_rows, S = c->n_sel;

	struct ggml_init_params sp = {(size_t) (3 * MAX_PARAMS + 16) * ggml_tensor_overhead(), NULL, true};
	t->ctx_static = ggml_init(sp);
	char name[64];
	param(t, "token_embd.weight", E, V);
	for (int l = 0; l < c->n_layer; l++) {
		snprintf(name, sizeof name, "blk.%d.attn_norm.weight", l);   param(t, name, E, 0);
		snprintf(name, sizeof name, "blk.%d.attn_q.weight", l);      param(t, name, E, E);
		snprintf(name, sizeof name, "blk.%d.attn_k.weight", l);      param(t, name, E, E);
		snprintf(name, sizeof name, "blk.%d.attn_v.weight", l);      param(t, name, E, E);
		snprintf(name, sizeof name, "blk.%d.attn_output.weight", l); param(t, name, E, E);
		snprintf(name, sizeof name, "blk.%d.ffn_norm.weight", l);    param(t, name, E, 0);
		snprintf(name, sizeof name, "blk.%d.ffn_gate.weight", l);    param(t, name, E, F);
		snprintf(name, sizeof name, "blk.%d.ffn_up.weight", l);      param(t, name, E, F);
		snprintf(name, sizeof name, "blk.%d.ffn_down.weight", l);    param(t, name, F, E);
	}
	param(t, "output_norm.weight", E, 0);
	param(t, "output.weight", E, V);

	t->tokens = ggml_new_tensor_1d(t->ctx_static, GGML_TYPE_I32, T * B);
	t->pos = ggml_new_tensor_1d(t->ctx_static, GGML_TYPE_I32, T * B);
	t->mask = ggml_new_tensor_4d(t->ctx_static, GGML_TYPE_F32, T, T, 1, B);
	t->sel = ggml_new_tensor_1d(t->ctx_static, GGML_TYPE_I32, S);
	t->labels = ggml_new_tensor_2d(t->ctx_static, GGML_TYPE_F32, V, S);
	t->one = ggml_new_tensor_1d(t->ctx_static, GGML_TYPE_F32, 1);
	t->adamw = ggml_new_tensor_1d(t->ctx_static, GGML_TYPE_F32, 7);

	t->backend = ggml_backend_cpu_init();
	if (t->backend == NULL) {
		snprintf(err, err_len, "cannot initialise the CPU backend");
		probe_trainer_free(t);
		return NULL;
	}
	ggml_backend_cpu_set_n_threads(t->backend, c->n_threads);
	t->buf_static = ggml_backend_alloc_ctx_tensors(t->ctx_static, t->backend);
	if (t->buf_static == NULL) {
		snprintf(err, err_len, "out of memory for the parameters");
		probe_trainer_free(t);
		return NULL;
	}
	ggml_backend_buffer_clear(t->buf_static, 0);
	const float one = 1.0f;
	ggml_backend_tensor_set(t->one, &one, 0, sizeof one);

	build(t, &t->fwd, MODE_FORWARD);
	build(t, &t->grad, MODE_GRAD);
	build(t, &t->train, MODE_TRAIN);
	t->onehot = calloc((size_t) V * S, sizeof(float));
	t->targets = calloc((size_t) S, sizeof(int32_t));
	t->preds = calloc((size_t) S, sizeof(int32_t));
	return t;
}

void probe_trainer_free(probe_trainer * t) {
	if (t == NULL) {
		return;
	}
	graph_inst * gs[3] = {&t->fwd, &t->grad, &t->train};
	for (int i = 0; i < 3; i++) {
		if (gs[i]->galloc) ggml_gallocr_free(gs[i]->galloc);
		if (gs[i]->ctx) ggml_free(gs[i]->ctx);
	}
	if (t->buf_static) ggml_backend_buffer_free(t->buf_static);
	if (t->ctx_static) ggml_free(t->ctx_static);
	if (t->backend) ggml_backend_free(t->backend);
	free(t->onehot);
	free(t->targets);
	free(t->preds);
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
	ggml_backend_tensor_get(t->grad.grads[i], dst, 0, ggml_nbytes(t->grad.grads[i]));
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
		t->targets[i] = targets[i];
	}
	ggml_backend_tensor_set(t->labels, t->onehot, 0, ggml_nbytes(t->labels));
}

static float run(probe_trainer * t, graph_inst * G, int n_real, int64_t * ncorrect) {
	if (!ggml_gallocr_alloc_graph(G->galloc, G->graph)) {
		return NAN;
	}
	if (ggml_backend_graph_compute(t->backend, G->graph) != GGML_STATUS_SUCCESS) {
		return NAN;
	}
	float loss = NAN;
	ggml_backend_tensor_get(G->loss, &loss, 0, sizeof loss);
	if (ncorrect != NULL) {
		ggml_backend_tensor_get(G->pred, t->preds, 0, ggml_nbytes(G->pred));
		int64_t n = 0;
		for (int i = 0; i < n_real && i < t->cfg.n_sel; i++) {
			n += t->preds[i] == t->targets[i];
		}
		*ncorrect = n;
	}
	return loss;
}

float probe_trainer_step(probe_trainer * t, float lr, float wd, int n_real, int64_t * ncorrect) {
	const float beta1 = 0.9f, beta2 = 0.99f;
	t->iter++;
	const float pars[7] = {lr, beta1, beta2, 1e-8f, wd, 1.0f / (1.0f - powf(beta1, (float) t->iter)),
	                       1.0f / (1.0f - powf(beta2, (float) t->iter))};
	ggml_backend_tensor_set(t->adamw, pars, 0, sizeof pars);
	return run(t, &t->train, n_real, ncorrect);
}

float probe_trainer_forward(probe_trainer * t, float * logits) {
	float loss = run(t, &t->fwd, 0, NULL);
	if (logits != NULL) {
		ggml_backend_tensor_get(t->fwd.logits, logits, 0, ggml_nbytes(t->fwd.logits));
	}
	return loss;
}

float probe_trainer_grad(probe_trainer * t) {
	return run(t, &t->grad, 0, NULL);
}

