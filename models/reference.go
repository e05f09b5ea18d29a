package models

import (
	"fmt"
	"math"
)

// Forward is the result of the reference forward pass over one token sequence.
type Forward struct {
	// Residual[l] is the residual stream after block l (llama.cpp's l_out-l), row-major
	// [tokens][NEmbd].
	Residual [][]float32
	// AttnOut[l] is what the attention block adds to the stream: its output projection (llama's
	// attn_out-l), after gemma2's post-attention norm (attn_post_norm-l). MLPOut[l] is the
	// feed-forward network's output (ffn_out-l), before gemma2's post-feed-forward norm.
	AttnOut, MLPOut [][]float32
	// AttnHeads[l] is the attention heads' output before the output projection, heads
	// concatenated (llama.cpp's kqv_out-l), row-major [tokens][NHead·HeadDim].
	AttnHeads [][]float32
	// Logits is row-major [tokens][NVocab].
	Logits []float32
}

// Reference runs the model's forward pass in plain Go, in float64, over tokens at positions
// 0…n−1, for each architecture in Archs as its published model defines it (GELU exactly, where
// ggml looks it up in a half-precision table). It is slow and exact: the yardstick the
// llama.cpp capture is tested against.
func (m *Llama) Reference(tokens []int32) (*Forward, error) {
	c := m.Config
	n := len(tokens)
	if n == 0 {
		return nil, fmt.Errorf("reference: empty token sequence")
	}
	for _, t := range tokens {
		if t < 0 || int(t) >= c.NVocab {
			return nil, fmt.Errorf("reference: token %d outside vocabulary of %d", t, c.NVocab)
		}
	}
	d, hd, nkv, qd := c.NEmbd, c.HeadDim(), c.NHeadKV*c.HeadDim(), c.QDim()
	embScale := 1.0
	if c.isGemma() {
		embScale = math.Sqrt(float64(d))
	}
	x := make([]float64, n*d)
	for i, t := range tokens {
		for j := 0; j < d; j++ {
			x[i*d+j] = float64(m.TokenEmbd[int(t)*d+j]) * embScale
		}
	}
	rot := rope
	if c.neoxRope() {
		rot = ropeNeox
	}
	act := func(g float64) float64 { return g / (1 + math.Exp(-g)) } // SiLU
	if c.isGemma() {
		act = gelu
	}
	out := &Forward{}
	h := make([]float64, d)
	q := make([]float64, n*qd)
	k := make([]float64, n*nkv)
	v := make([]float64, n*nkv)
	att := make([]float64, n*qd)
	scores := make([]float64, n)
	g := make([]float64, c.NFF)
	for l, b := range m.Blocks {
		for i := 0; i < n; i++ {
			rmsNorm(h, x[i*d:(i+1)*d], b.AttnNorm, c.NormEps)
			matVec(q[i*qd:(i+1)*qd], b.Wq, h)
			matVec(k[i*nkv:(i+1)*nkv], b.Wk, h)
			matVec(v[i*nkv:(i+1)*nkv], b.Wv, h)
			if b.Bq != nil {
				addTo(q[i*qd:(i+1)*qd], b.Bq)
				addTo(k[i*nkv:(i+1)*nkv], b.Bk)
				addTo(v[i*nkv:(i+1)*nkv], b.Bv)
			}
			rot(q[i*qd:(i+1)*qd], hd, i, c.RopeTheta)
			rot(k[i*nkv:(i+1)*nkv], hd, i, c.RopeTheta)
		}
		group := c.NHead / c.NHeadKV
		scale := 1 / math.Sqrt(float64(hd))
		for i := 0; i < n; i++ {
			first := 0 // the earliest position token i attends to
			if c.IsSWALayer(l) {
				first = max(0, i-c.SlidingWindow+1)
			}
			for hh := 0; hh < c.NHead; hh++ {
				qh := q[i*qd+hh*hd : i*qd+(hh+1)*hd]
				kvh := hh / group
				maxS := math.Inf(-1)
				for j := first; j <= i; j++ {
					kh := k[j*nkv+kvh*hd : j*nkv+(kvh+1)*hd]
					s := 0.0
					for e := range qh {
						s += qh[e] * kh[e]
					}
					s *= scale
					if c.AttnSoftcap > 0 {
						cp := float64(c.AttnSoftcap)
						s = cp * math.Tanh(s/cp)
					}
					scores[j] = s
					maxS = math.Max(maxS, scores[j])
				}
				sum := 0.0
				for j := first; j <= i; j++ {
					scores[j] = math.Exp(scores[j] - maxS)
					sum += scores[j]
				}
				o := att[i*qd+hh*hd : i*qd+(hh+1)*hd]
				clear(o)
				for j := first; j <= i; j++ {
					vh := v[j*nkv+kvh*hd : j*nkv+(kvh+1)*hd]
					p := scores[j] / sum
					for e := range o {
						o[e] += p * vh[e]
					}
				}
			}
		}
		attnOut := make([]float32, n*d)
		mlpOut := make([]float32, n*d)
		proj := make([]float64, d)
		up := make([]float64, c.NFF)
		for i := 0; i < n; i++ {
			xi := x[i*d : (i+1)*d]
			matVec(proj, b.Wo, att[i*qd:(i+1)*qd])
			if b.PostAttnNorm != nil {
				rmsNorm(proj, proj, b.PostAttnNorm, c.NormEps)
			}
			for j := range xi {
				attnOut[i*d+j] = float32(proj[j])
				xi[j] += proj[j]
			}
			rmsNorm(h, xi, b.FFNNorm, c.NormEps)
			matVec(g, b.Gate, h)
			matVec(up, b.Up, h)
			for j := range g {
				g[j] = act(g[j]) * up[j]
			}
			matVec(proj, b.Down, g)
			for j := range xi {
				mlpOut[i*d+j] = float32(proj[j])
			}
			if b.PostFFNNorm != nil {
				rmsNorm(proj, proj, b.PostFFNNorm, c.NormEps)
			}
			for j := range xi {
				xi[j] += proj[j]
			}
		}
		out.AttnHeads = append(out.AttnHeads, toFloat32(att))
		out.AttnOut = append(out.AttnOut, attnOut)
		out.MLPOut = append(out.MLPOut, mlpOut)
		out.Residual = append(out.Residual, toFloat32(x))
	}
	out.Logits = make([]float32, n*c.NVocab)
	logit := make([]float64, c.NVocab)
	for i := 0; i < n; i++ {
		rmsNorm(h, x[i*d:(i+1)*d], m.OutputNorm, c.NormEps)
		matVec(logit, m.Output, h)
		for j, l := range logit {
			if c.FinalSoftcap > 0 {
				cp := float64(c.FinalSoftcap)
				l = cp * math.Tanh(l/cp)
			}
			out.Logits[i*c.NVocab+j] = float32(l)
		}
	}
	return out, nil
}

// addTo adds b to v element-wise.
func addTo(v []float64, b []float32) {
	for i := range v {
		v[i] += float64(b[i])
	}
}

// rmsNorm sets dst to x / rms(x) · w; dst may be x.
func rmsNorm(dst, x []float64, w []float32, eps float32) {
	ss := 0.0
	for _, v := range x {
		ss += v * v
	}
	s := 1 / math.Sqrt(ss/float64(len(x))+float64(eps))
	for i, v := range x {
		dst[i] = v * s * float64(w[i])
	}
}

// matVec computes dst = W x for a weight of n_out rows of n_in values.
func matVec(dst []float64, w []float32, x []float64) {
	nIn := len(x)
	for o := range dst {
		row := w[o*nIn : (o+1)*nIn]
		s := 0.0
		for i, v := range row {
			s += float64(v) * x[i]
		}
		dst[o] = s
	}
}

// rope rotates adjacent pairs (2i, 2i+1) of every head of v by pos·θ^(−2i/headDim): llama.cpp's
// NORM mode.
func rope(v []float64, headDim, pos int, theta float32) {
	for h := 0; h < len(v)/headDim; h++ {
		for i := 0; i < headDim/2; i++ {
			ang := float64(pos) * math.Pow(float64(theta), -2*float64(i)/float64(headDim))
			sin, cos := math.Sincos(ang)
			a, b := v[h*headDim+2*i], v[h*headDim+2*i+1]
			v[h*headDim+2*i] = a*cos - b*sin
			v[h*headDim+2*i+1] = a*sin + b*cos
		}
	}
}

func toFloat32(x []float64) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = float32(v)
	}
	return out
}
