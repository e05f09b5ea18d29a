// Package models builds the GGUF models probe tests and demonstrates with, without a download:
// random-init tiny llamas (deterministic for a seed), their SPM vocabularies, and a pure-Go
// reference forward pass of the llama architecture that the captured residual stream is
// checked against.
//
// The llama block computed by the reference, for hidden state x (one row per token):
//
//	h   = RMSNorm(x) ⊙ attn_norm                 RMSNorm(x) = x / sqrt(mean(x²) + ε)
//	q,k,v = Wq h, Wk h, Wv h                      per head; k and v have n_head_kv heads
//	q,k = RoPE(q), RoPE(k)                        NORM mode: adjacent pairs (2i, 2i+1) rotated by
//	                                              pos · θ^(−2i/d_head)
//	a   = softmax(q kᵀ / sqrt(d_head) + causal) v query head j reads kv head j / (n_head/n_head_kv)
//	x'  = x + Wo a                                (ffn_inp)
//	l_out = x' + W_down (SiLU(W_gate g) ⊙ W_up g), g = RMSNorm(x') ⊙ ffn_norm
//
// and logits = W_out (RMSNorm(x_L) ⊙ output_norm).
package models
