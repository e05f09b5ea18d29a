package train

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// packer turns sequences into batches of rows of SeqLen tokens, several sequences to a row
// (first fit), each batch holding at most LossTokens loss positions; unused loss slots repeat
// the batch's own positions, so the static graph always sees the same shape.
type packer struct {
	cfg     Config
	data    []Sequence
	order   []int
	next_   int
	pending []int // sequences that did not fit the previous batch
	rng     *rand.Rand
	served  int
}

func newPacker(cfg Config, data []Sequence, rng *rand.Rand) (*packer, error) {
	for i, s := range data {
		n := len(s.Tokens)
		if n < 2 || n > cfg.SeqLen {
			return nil, fmt.Errorf("train: sequence %d has %d tokens; rows hold %d", i, n, cfg.SeqLen)
		}
		if s.LossFrom < 1 || s.LossFrom >= n {
			return nil, fmt.Errorf("train: sequence %d: loss from %d of %d tokens", i, s.LossFrom, n)
		}
		if n-s.LossFrom > cfg.LossTokens {
			return nil, fmt.Errorf("train: sequence %d has %d loss tokens; a batch holds %d", i, n-s.LossFrom, cfg.LossTokens)
		}
		for _, tok := range s.Tokens {
			if tok < 0 || int(tok) >= cfg.Model.NVocab {
				return nil, fmt.Errorf("train: sequence %d: token %d outside the vocabulary", i, tok)
			}
		}
	}
	p := &packer{cfg: cfg, data: data, rng: rng}
	p.shuffle()
	return p, nil
}

func (p *packer) shuffle() {
	p.order = p.rng.Perm(len(p.data))
	p.next_ = 0
}

func (p *packer) take() int {
	if len(p.pending) > 0 {
		i := p.pending[0]
		p.pending = p.pending[1:]
		return i
	}
	if p.next_ == len(p.order) {
		p.shuffle()
	}
	p.next_++
	p.served++
	return p.order[p.next_-1]
}

func (p *packer) epochs() float64 { return float64(p.served) / float64(len(p.data)) }

func newBatch(T, B, nSel int) *batch {
	return &batch{
		tokens: make([]int32, T*B), pos: make([]int32, T*B), mask: make([]float32, T*T*B),
		sel: make([]int32, nSel), targets: make([]int32, nSel),
	}
}

// next builds the next batch.
func (p *packer) next() *batch {
	T, B, S := p.cfg.SeqLen, p.cfg.Rows, p.cfg.LossTokens
	b := newBatch(T, B, S)
	used := make([]int, B)
	seg := make([]int, T*B)
	for i := range seg {
		seg[i] = -1 - i // padding: each position its own segment
	}
	nSel := 0
	placed := 0 // segment id of each placement: a sequence placed twice stays two sequences
	var deferred []int
	for tries := 0; tries < 4*B+8; tries++ {
		i := p.take()
		s := p.data[i]
		n := len(s.Tokens)
		loss := n - s.LossFrom
		row := -1
		for r := 0; r < B; r++ {
			if T-used[r] >= n {
				row = r
				break
			}
		}
		if row < 0 || nSel+loss > S {
			deferred = append(deferred, i)
			if row < 0 && len(deferred) > 2 {
				break
			}
			continue
		}
		off := row*T + used[row]
		for j, tok := range s.Tokens {
			b.tokens[off+j] = tok
			b.pos[off+j] = int32(j)
			seg[off+j] = placed
		}
		placed++
		for j := s.LossFrom - 1; j < n-1; j++ {
			b.sel[nSel] = int32(off + j)
			b.targets[nSel] = s.Tokens[j+1]
			nSel++
		}
		used[row] += n
		b.tokensInBatch += n
	}
	p.pending = append(p.pending, deferred...)
	b.realLoss = nSel
	for k := nSel; k < S; k++ { // repeat the real loss positions to fill the static shape
		b.sel[k] = b.sel[k%nSel]
		b.targets[k] = b.targets[k%nSel]
	}
	fillMask(b, seg, T, B)
	return b
}

// fillMask writes the block-diagonal causal mask: query q attends to key k of the same row when
// both belong to the same sequence and k ≤ q.
func fillMask(b *batch, seg []int, T, B int) {
	ninf := float32(math.Inf(-1))
	for r := 0; r < B; r++ {
		for q := 0; q < T; q++ {
			row := b.mask[(r*T+q)*T : (r*T+q+1)*T]
			for k := 0; k < T; k++ {
				if k <= q && seg[r*T+k] == seg[r*T+q] {
					row[k] = 0
				} else {
					row[k] = ninf
				}
			}
		}
	}
}
