// Package models builds the GGUF models probe tests and demonstrates with, without a download:
// random-init tiny models (deterministic for a seed) of the llama, qwen2, phi3, gemma and gemma2
// architectures, their SPM or GPT-2 byte-level BPE vocabularies, and a pure-Go reference
// forward pass of each architecture that the captured activations are checked against.
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
// and logits = W_out (RMSNorm(x_L) ⊙ output_norm). The other architectures change it as Archs
// lists: biases on q, k, v (qwen2); fused matrices (phi3, the same arithmetic); NEOX RoPE,
// which rotates the pairs (i, i + d_head/2) (all but llama); x₀ = √n_embd · embedding, GELU in
// place of SiLU, d_head of its own and W_out = the embedding (gemma, gemma2); and for gemma2
// x' = x + RMSNorm(Wo a) ⊙ post_attention_norm, l_out = x' + RMSNorm(ffn) ⊙ post_ffw_norm,
// scores s ↦ c·tanh(s/c) after scaling, keys older than the window masked on even layers, and
// logits capped the same way.
package models
