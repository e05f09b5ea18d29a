package probe

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
)

// ProbeVersion is the version of the probe file format written by Save. Version 2 added
// ensembles (Members) and generation calibrations (Generation); version 3 the binary form of
// large probes (a safetensors file holding the JSON document and the arrays; see Save).
// Version 1 and 2 files still load.
const ProbeVersion = 3

// Probe is a fitted detector: it maps an activation row x (n_embd values of
// one layer at one position) to a score, higher meaning more likely positive,
// and fires when the score exceeds Threshold.
//
// With z = (x − Mean) / Scale, elementwise (the normalisation; Mean 0 and
// Scale 1 when Normalization is nil), a linear probe scores
//
//	s(x) = Weights·z + Bias
//
// and a quadratic probe (Quadratic not nil: Mahalanobis, spectral signature)
//
//	s(x) = Bias + Σ_k Coef[k]·(Components[k]·z)².
//
// A Probe is what Fit returns and what Save writes (as JSON, or as safetensors
// for large arrays); its fields are plain data. Scoring is safe for concurrent
// use; do not modify the fields after the first score (scoring caches a
// prepared form of them).
type Probe struct {
	Version       int            `json:"version"`
	Method        string         `json:"method"`
	Layer         int            `json:"layer"`
	Point         string         `json:"point"`
	Position      Position       `json:"position"`
	Model         ProbeModel     `json:"model"`
	Normalization *Normalization `json:"normalization,omitempty"`
	Weights       []float64      `json:"weights,omitempty"`
	Bias          float64        `json:"bias"`
	Quadratic     *Quadratic     `json:"quadratic,omitempty"`
	Threshold     float64        `json:"threshold"`
	Calibration   *Calibration   `json:"calibration,omitempty"`
	// Members, for Method MethodEnsemble, are the probes whose scores the probe fuses (see
	// NewEnsemble); Layer and Position are then the first member's.
	Members []Member `json:"members,omitempty"`
	// Generation, when set, is the threshold for watching generated tokens under a rule,
	// calibrated on clean generations (CalibrateGeneration); Threshold stays the prompt's.
	Generation *GenerationCalibration `json:"generation,omitempty"`
	Training   TrainingSummary        `json:"training"`
	Meta       map[string]string      `json:"meta,omitempty"`

	prep atomic.Pointer[prepared]
}

// ProbeModel identifies the model a probe was trained on.
type ProbeModel struct {
	Fingerprint string `json:"fingerprint"`
	NEmbd       int    `json:"n_embd"`
	// Family identifies the model across quantisations, FileType its file's type: a probe
	// applies with a warning to another quantisation of its model (MatchModel). Probe files
	// written before them leave them empty and match only their exact model.
	Family   string `json:"family,omitempty"`
	FileType string `json:"file_type,omitempty"`
}

// ModelID identifies a model file for MatchModel.
type ModelID struct {
	Fingerprint string
	Family      string
	FileType    string
	NEmbd       int
}

// MatchModel checks that the probe applies to a model: its own (same fingerprint), or another
// quantisation of it (same family), which is allowed with a warning naming both file types —
// quantisation shifts activations, so its calibration may not hold there. Anything else is an
// error wrapping ErrModelMismatch, as from CheckModel.
func (p *Probe) MatchModel(m ModelID) (warning string, err error) {
	err = p.CheckModel(m.Fingerprint, m.NEmbd)
	if err == nil || m.NEmbd != p.Model.NEmbd || p.Model.Family == "" || m.Family != p.Model.Family {
		return "", err
	}
	return fmt.Sprintf("the probe was trained on %s (%s); this model is another quantisation of it, %s (%s): quantisation shifts activations, so recalibrate the probe on this model's clean traffic (probe calibrate)",
		orUnknown(p.Model.FileType), p.Model.Fingerprint, orUnknown(m.FileType), m.Fingerprint), nil
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown file type"
	}
	return s
}

// Normalization is the feature standardisation z_j = (x_j − Mean_j) / Scale_j
// applied before the weights.
type Normalization struct {
	Mean  []float64 `json:"mean"`
	Scale []float64 `json:"scale"`
}

// Quadratic holds the terms of a quadratic score (see Probe). Components are
// unit vectors (rows of n_embd values), stored as float32 to keep files of
// large models manageable.
type Quadratic struct {
	Coef       []float64   `json:"coef"`
	Components [][]float32 `json:"components"`
}

// TrainingSummary records what a probe was trained on and how well it
// cross-validated. CV fields are zero when no cross-validation was run.
type TrainingSummary struct {
	Rows      int `json:"rows"`
	Positives int `json:"positives"`
	Negatives int `json:"negatives"`
	Groups    int `json:"groups"`
	// CVFolds is the number of grouped folds, CVAUROC the mean fold AUROC and
	// CVLow/CVHigh its 95% bootstrap interval (pooled out-of-fold scores).
	CVFolds int     `json:"cv_folds"`
	CVAUROC float64 `json:"cv_auroc"`
	CVLow   float64 `json:"cv_auroc_low"`
	CVHigh  float64 `json:"cv_auroc_high"`
	// Params holds the method's hyper-parameters (C, shrinkage, …).
	Params map[string]float64 `json:"params,omitempty"`
	// Notes holds remarks such as an orientation flip.
	Notes []string `json:"notes,omitempty"`
}

// SetCV records a cross-validation result in the summary.
func (t *TrainingSummary) SetCV(cv *CVResult) {
	t.CVFolds, t.CVAUROC = cv.Folds, cv.MeanAUROC
	t.CVLow, t.CVHigh = cv.Pooled.Low, cv.Pooled.High
}

// setParam records a hyper-parameter.
func (t *TrainingSummary) setParam(name string, v float64) {
	if t.Params == nil {
		t.Params = map[string]float64{}
	}
	t.Params[name] = v
}

// prepared is the probe folded for fast float32 scoring.
type prepared struct {
	n int
	// linear: s = w·x + b
	w []float64
	b float64
	// quadratic: z = (x − mean)·invScale
	mean, invScale []float32
	coef           []float64
	comps          [][]float32
}

// IsQuadratic reports whether the probe has a quadratic score.
func (p *Probe) IsQuadratic() bool { return p.Quadratic != nil }

// NEmbd returns the length of the rows the probe scores.
func (p *Probe) NEmbd() int { return p.Model.NEmbd }

func (p *Probe) prepare() *prepared {
	if pp := p.prep.Load(); pp != nil {
		return pp
	}
	d := p.Model.NEmbd
	pp := &prepared{n: d, b: p.Bias}
	mean := make([]float64, d)
	scale := make([]float64, d)
	for j := range scale {
		scale[j] = 1
	}
	if p.Normalization != nil {
		copy(mean, p.Normalization.Mean)
		copy(scale, p.Normalization.Scale)
	}
	if p.Quadratic == nil {
		// w·(x − μ)/σ + b = Σ (w/σ)·x + (b − Σ w·μ/σ)
		pp.w = make([]float64, d)
		for j, w := range p.Weights {
			pp.w[j] = w / scale[j]
			pp.b -= w * mean[j] / scale[j]
		}
	} else {
		pp.mean = make([]float32, d)
		pp.invScale = make([]float32, d)
		for j := range mean {
			pp.mean[j] = float32(mean[j])
			pp.invScale[j] = float32(1 / scale[j])
		}
		pp.coef, pp.comps = p.Quadratic.Coef, p.Quadratic.Components
	}
	p.prep.CompareAndSwap(nil, pp)
	return p.prep.Load()
}

// Score returns the probe's score of one row x of n_embd values. It panics if
// len(x) differs from the probe's n_embd. A linear score is computed as
// Σ_j (w_j/σ_j)·x_j + (b − Σ_j w_j μ_j/σ_j), the normalisation folded into the
// weights, in float64; a quadratic one normalises x in float32, accumulates
// each projection in float32 and adds the terms in float64 in component order.
// A large quadratic probe (components × n_embd ≥ parallelQuadWork) splits its
// components across GOMAXPROCS goroutines; the result is bit for bit the
// single-threaded one.
func (p *Probe) Score(x []float32) float64 {
	p.mustBeSingle()
	pp := p.prepare()
	if len(x) != pp.n {
		panic(fmt.Sprintf("probe: row of %d values for a probe of n_embd %d", len(x), pp.n))
	}
	if pp.w != nil {
		return dotMixed(x, pp.w) + pp.b
	}
	if w := pp.rowWorkers(); w > 1 {
		var s [1]float64
		pp.quadraticSplit([][]float32{x}, s[:], w)
		return s[0]
	}
	return pp.quadratic(x, make([]float32, pp.n))
}

// parallelQuadWork is the work of one quadratic score (components × n_embd multiply-adds)
// from which Score splits the components across goroutines. Measured on 2 cores shared with
// other work (BenchmarkScoreQuadraticRow, GOMAXPROCS 2, -benchtime 3x): splitting lost at
// 1024² in most runs, went either way at 1448² (2,096,704, just below this), and at 4096²
// gained 1.5–1.8× while the second core was free, 0.8–1.5× while other processes loaded it.
var parallelQuadWork int64 = 1 << 21

// rowWorkers returns the number of goroutines a quadratic score of one row uses.
func (pp *prepared) rowWorkers() int {
	if int64(len(pp.comps))*int64(pp.n) < parallelQuadWork {
		return 1
	}
	return workers(0, len(pp.comps))
}

// normalize sets z = (x − mean)·invScale in float32.
func (pp *prepared) normalize(x, z []float32) {
	for j, v := range x {
		z[j] = (v - pp.mean[j]) * pp.invScale[j]
	}
}

// term returns Coef[k]·(u·z)², the projection accumulated in float32. The conversion rounds
// the product before the caller adds it (Go may otherwise fuse a multiply and an add), so a
// term is the same wherever it is added.
func (pp *prepared) term(k int, u, z []float32) float64 {
	t := float64(dot32(u, z))
	return float64(pp.coef[k] * t * t)
}

// The three ways to compute quadratic scores below give the same bits: each term is computed
// alone by term, and each row's terms are added to Bias in component order.

// quadratic returns the quadratic score of x on the caller's goroutine, using z (n values) as
// scratch space.
func (pp *prepared) quadratic(x, z []float32) float64 {
	pp.normalize(x, z)
	s := pp.b
	for k, u := range pp.comps {
		s += pp.term(k, u, z)
	}
	return s
}

// quadBlock is the number of rows quadraticBlock scores together.
const quadBlock = 8

// quadraticBlock scores the rows xs (at most quadBlock) into dst on the caller's goroutine,
// reading each component once for all of them; zs holds len(xs) scratch rows of n values.
func (pp *prepared) quadraticBlock(xs, zs [][]float32, dst []float64) {
	zs = zs[:len(xs)]
	for r, x := range xs {
		pp.normalize(x, zs[r])
		dst[r] = pp.b
	}
	for k, u := range pp.comps {
		for r, z := range zs {
			dst[r] += pp.term(k, u, z)
		}
	}
}

// splitChunk is the work (multiply-adds) of one chunk of components in quadraticSplit, some
// 20–60 µs on one core: small enough that a goroutine whose core is taken delays little.
var splitChunk = 1 << 18

// quadraticSplit scores the rows xs into dst with the components split across w goroutines
// in chunks (parallelChunks), each chunk's components read once for all the rows; the terms
// are then added row by row.
func (pp *prepared) quadraticSplit(xs [][]float32, dst []float64, w int) {
	nc := len(pp.comps)
	zs := make([][]float32, len(xs))
	for r, x := range xs {
		zs[r] = make([]float32, pp.n)
		pp.normalize(x, zs[r])
	}
	terms := make([]float64, len(xs)*nc)
	parallelChunks(nc, w, splitChunk/(len(xs)*pp.n), func(lo, hi int) {
		for k := lo; k < hi; k++ {
			u := pp.comps[k]
			for r, z := range zs {
				terms[r*nc+k] = pp.term(k, u, z)
			}
		}
	})
	for r := range xs {
		s := pp.b
		for _, t := range terms[r*nc : (r+1)*nc] {
			s += t
		}
		dst[r] = s
	}
}

// ScoreRows scores the rows idx of x (all rows if idx is nil) into dst, which
// is grown if needed, and returns it: dst[k] = Score(x.Row(idx[k])), bit for
// bit. It uses GOMAXPROCS goroutines for large inputs: rows split across them,
// or, for fewer than 4·GOMAXPROCS rows of a large quadratic probe, the
// components as in Score. A quadratic probe reads each component once for
// 8 rows (or for all the rows of a split), not once per row.
// It panics if x.Cols differs from the probe's n_embd.
func (p *Probe) ScoreRows(x *Matrix, idx []int, dst []float64) []float64 {
	p.mustBeSingle()
	pp := p.prepare()
	if x.Cols != pp.n {
		panic(fmt.Sprintf("probe: matrix of %d columns for a probe of n_embd %d", x.Cols, pp.n))
	}
	n := x.Rows
	if idx != nil {
		n = len(idx)
	}
	if cap(dst) < n {
		dst = make([]float64, n)
	}
	dst = dst[:n]
	row := func(k int) []float32 {
		if idx == nil {
			return x.Row(k)
		}
		return x.Row(idx[k])
	}
	if pp.w != nil {
		// Split only when each goroutine gets a few MB of rows.
		w := workers(0, int(int64(n)*int64(pp.n)/(1<<20)))
		parallelFor(n, w, func(_, lo, hi int) {
			for k := lo; k < hi; k++ {
				dst[k] = dotMixed(row(k), pp.w) + pp.b
			}
		})
		return dst
	}
	if rw := pp.rowWorkers(); rw > 1 && n < 4*runtime.GOMAXPROCS(0) {
		// Few rows of a large probe: split the components.
		xs := make([][]float32, n)
		for k := range xs {
			xs[k] = row(k)
		}
		pp.quadraticSplit(xs, dst, rw)
		return dst
	}
	// Split rows only when each goroutine gets a million multiply-adds or more.
	perRow := int64(len(pp.comps)) * int64(pp.n)
	w := workers(0, int(min(int64(n)*perRow/(1<<20), math.MaxInt32)))
	parallelFor(n, w, func(_, lo, hi int) {
		zs := make([][]float32, quadBlock)
		for r := range zs {
			zs[r] = make([]float32, pp.n)
		}
		xs := make([][]float32, 0, quadBlock)
		for b := lo; b < hi; b += quadBlock {
			e := min(b+quadBlock, hi)
			xs = xs[:0]
			for k := b; k < e; k++ {
				xs = append(xs, row(k))
			}
			pp.quadraticBlock(xs, zs, dst[b:e])
		}
	})
	return dst
}

// mustBeSingle panics for an ensemble, whose rows come from several layers or positions:
// ScoreSource and ScoreStep score those.
func (p *Probe) mustBeSingle() {
	if p.IsEnsemble() {
		panic("probe: an ensemble reads several features; score it with ScoreSource or ScoreStep")
	}
}

// Fired reports whether score exceeds the probe's threshold.
func (p *Probe) Fired(score float64) bool { return score > p.Threshold }

// ErrModelMismatch is wrapped by the errors of CheckModel and CheckDataset.
var ErrModelMismatch = errors.New("probe does not match the model")

// CheckModel returns an error wrapping ErrModelMismatch unless the probe
// applies to a model with this fingerprint and n_embd. A probe saved without
// a fingerprint (trained on synthetic data) checks n_embd only.
func (p *Probe) CheckModel(fingerprint string, nEmbd int) error {
	if nEmbd != p.Model.NEmbd {
		return fmt.Errorf("%w: probe expects n_embd %d, the model has %d", ErrModelMismatch, p.Model.NEmbd, nEmbd)
	}
	if p.Model.Fingerprint == "" {
		return fmt.Errorf("%w: the probe names no model (no fingerprint), so it applies to none", ErrModelMismatch)
	}
	if fingerprint != p.Model.Fingerprint {
		return fmt.Errorf("%w: probe was trained on model %q, this model is %q", ErrModelMismatch, p.Model.Fingerprint, fingerprint)
	}
	return nil
}

// CheckDataset returns an error unless d holds rows the probe applies to:
// same n_embd and, for a dataset read from a store, the same model
// fingerprint, layer and position.
func (p *Probe) CheckDataset(d *Dataset) error {
	if p.IsEnsemble() {
		return fmt.Errorf("an ensemble reads %d features (layers and positions), not the rows of one dataset", len(p.Features()))
	}
	if d.X.Cols != p.Model.NEmbd {
		return fmt.Errorf("%w: probe expects n_embd %d, the dataset has %d columns", ErrModelMismatch, p.Model.NEmbd, d.X.Cols)
	}
	if d.Info.Fingerprint == "" {
		return nil
	}
	if _, err := p.MatchModel(ModelID{Fingerprint: d.Info.Fingerprint, Family: d.Info.Family, FileType: d.Info.FileType, NEmbd: d.X.Cols}); err != nil {
		return err
	}
	if d.Info.Layer != p.Layer {
		return fmt.Errorf("%w: probe is for layer %d, the dataset is layer %d", ErrModelMismatch, p.Layer, d.Info.Layer)
	}
	if p.Position != "" && d.Info.Position != p.Position {
		return fmt.Errorf("%w: probe is for position %q, the dataset is %q", ErrModelMismatch, p.Position, d.Info.Position)
	}
	return nil
}

// Apply checks d with CheckDataset and returns the scores of all its rows.
func (p *Probe) Apply(d *Dataset) ([]float64, error) {
	if err := p.CheckDataset(d); err != nil {
		return nil, err
	}
	return p.ScoreRows(d.X, nil, nil), nil
}

// Calibrate sets the probe's threshold so that it fires on a fraction
// targetFPR of the clean rows of d (those labelled Negative; see
// CalibrateThreshold), and records the calibration. d should be held-out
// validation data, not the training rows.
func (p *Probe) Calibrate(d *Dataset, targetFPR float64) error {
	if err := p.CheckDataset(d); err != nil {
		return err
	}
	clean := d.WithLabel(Negative)
	if len(clean) == 0 {
		return fmt.Errorf("calibrate: no clean (negative) rows among %d", d.Len())
	}
	return p.calibrateScores(p.ScoreRows(d.X, clean, nil), targetFPR)
}

// calibrateScores sets the threshold from the probe's scores of clean rows and records the
// calibration.
func (p *Probe) calibrateScores(clean []float64, targetFPR float64) error {
	cal, err := CalibrateThreshold(clean, targetFPR)
	if err != nil {
		return err
	}
	p.Threshold = cal.Threshold
	p.Calibration = &cal
	return nil
}

// Orient makes a linear probe's score increase towards the positive class of
// d: if its AUROC on d's labelled rows is below ½ it negates Weights and Bias,
// clears the calibration (the threshold no longer applies) and records a note.
// It reports whether it flipped the probe. Contrast-pair directions carry an
// arbitrary sign relative to a behaviour; Orient fixes it with labelled data.
// A quadratic probe is left as it is.
func (p *Probe) Orient(d *Dataset) (bool, error) {
	if p.Quadratic != nil {
		return false, nil
	}
	rows := d.Labelled()
	if err := p.CheckDataset(d); err != nil {
		return false, err
	}
	auc, err := AUROC(p.ScoreRows(d.X, rows, nil), d.Positives(rows))
	if err != nil {
		return false, err
	}
	if auc >= 0.5 {
		return false, nil
	}
	for j := range p.Weights {
		p.Weights[j] = -p.Weights[j]
	}
	p.Bias = -p.Bias
	p.Threshold, p.Calibration = 0, nil
	p.prep.Store(nil)
	p.Training.Notes = append(p.Training.Notes, fmt.Sprintf("orientation flipped (AUROC %.4f on %d labelled rows)", auc, len(rows)))
	return true, nil
}

// newProbe returns a probe with the provenance of d and its training counts.
func newProbe(method string, d *Dataset) *Probe {
	pos, neg, _ := d.Counts()
	groups := map[string]bool{}
	for i := range d.Groups {
		groups[groupKey(d, i)] = true
	}
	return &Probe{
		Version:  ProbeVersion,
		Method:   method,
		Layer:    d.Info.Layer,
		Point:    d.Info.Point,
		Position: d.Info.Position,
		Model:    ProbeModel{Fingerprint: d.Info.Fingerprint, NEmbd: d.X.Cols, Family: d.Info.Family, FileType: d.Info.FileType},
		Training: TrainingSummary{Rows: d.Len(), Positives: pos, Negatives: neg, Groups: len(groups)},
	}
}

// positiveFinite reports whether v is a positive finite number (NaN is not).
func positiveFinite(v float64) bool { return v > 0 && !math.IsInf(v, 0) }

// finite reports whether all values are finite.
func finite(xs []float64) bool {
	for _, v := range xs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}
