package probe

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/gonum/stat"
)

// Rule names: how a monitor turns the per-token scores of a generation into a decision.
const (
	RuleMax  = "max"  // fire on the first token whose score exceeds the threshold
	RuleMean = "mean" // fire when the mean score of the tokens so far exceeds it
	RuleEMA  = "ema"  // fire when an exponential moving average of the scores exceeds it
	RuleKofN = "kofn" // fire when k of the last n scores exceed it
)

// Rule aggregates the scores of the tokens of one generation, in order, into a running
// statistic r_t; a monitor fires at the first token t with r_t > threshold. With s_t the score
// of token t (token 0 is scored on the last prompt token):
//
//	max:  r_t = s_t
//	mean: r_t = (s_0 + … + s_t) / (t+1)
//	ema:  r_0 = s_0, r_t = α·s_t + (1−α)·r_{t−1}
//	kofn: r_t = the k-th largest of s_{t−n+1} … s_t (−∞ while fewer than k tokens exist),
//	      so r_t > threshold exactly when k of the last n scores exceed it
//
// Every rule's decision is "the running statistic crossed the threshold", so a rule is
// calibrated like a single score: on clean generations, by the largest r_t of each
// (Rule.Peak), which makes the calibrated false positive rate a rate per generation.
type Rule struct {
	Kind  string  `json:"kind"`
	Alpha float64 `json:"alpha,omitempty"` // ema: weight of the newest score, in (0, 1]
	K     int     `json:"k,omitempty"`     // kofn: scores that must exceed the threshold
	N     int     `json:"n,omitempty"`     // kofn: window of the latest tokens, N ≥ K ≥ 1
}

// MaxKofNWindow bounds the k-of-n window.
const MaxKofNWindow = 4096

// ParseRule reads a rule as written on the command line: "max", "mean", "ema:ALPHA" (e.g.
// "ema:0.3") or "kofn:K/N" (e.g. "kofn:2/4").
func ParseRule(s string) (Rule, error) {
	kind, arg, hasArg := strings.Cut(strings.TrimSpace(s), ":")
	var r Rule
	switch kind {
	case RuleMax, RuleMean:
		if hasArg {
			return r, fmt.Errorf("rule %q: %s takes no argument", s, kind)
		}
		r = Rule{Kind: kind}
	case RuleEMA:
		a, err := strconv.ParseFloat(arg, 64)
		if !hasArg || err != nil {
			return r, fmt.Errorf("rule %q: want ema:ALPHA, e.g. ema:0.3", s)
		}
		r = Rule{Kind: kind, Alpha: a}
	case RuleKofN:
		ks, ns, ok := strings.Cut(arg, "/")
		k, err1 := strconv.Atoi(ks)
		n, err2 := strconv.Atoi(ns)
		if !hasArg || !ok || err1 != nil || err2 != nil {
			return r, fmt.Errorf("rule %q: want kofn:K/N, e.g. kofn:2/4", s)
		}
		r = Rule{Kind: kind, K: k, N: n}
	default:
		return r, fmt.Errorf("rule %q: want max, mean, ema:ALPHA or kofn:K/N", s)
	}
	return r, r.Validate()
}

// Validate checks the rule's kind and parameters.
func (r Rule) Validate() error {
	switch r.Kind {
	case RuleMax, RuleMean:
	case RuleEMA:
		if !(r.Alpha > 0 && r.Alpha <= 1) {
			return fmt.Errorf("rule ema: alpha %v outside (0, 1]", r.Alpha)
		}
	case RuleKofN:
		if r.K < 1 || r.N < r.K || r.N > MaxKofNWindow {
			return fmt.Errorf("rule kofn: k %d of n %d: want 1 ≤ k ≤ n ≤ %d", r.K, r.N, MaxKofNWindow)
		}
	default:
		return fmt.Errorf("rule %q unknown (want max, mean, ema or kofn)", r.Kind)
	}
	return nil
}

// String writes the rule as ParseRule reads it.
func (r Rule) String() string {
	switch r.Kind {
	case RuleEMA:
		return fmt.Sprintf("ema:%s", strconv.FormatFloat(r.Alpha, 'g', -1, 64))
	case RuleKofN:
		return fmt.Sprintf("kofn:%d/%d", r.K, r.N)
	}
	return r.Kind
}

// Tracker follows one generation under a rule: Push each token's score in order and compare
// the running statistic it returns with the threshold. The zero value is not usable; make one
// with Rule.Start.
type Tracker struct {
	r      Rule
	norm   []Moments // per-position standardisation, nil for none
	t      int
	sum    float64
	ema    float64
	window []float64 // kofn: the last n scores, oldest first
	sorted []float64
}

// Start returns a tracker for a new generation. The rule must be valid.
func (r Rule) Start() *Tracker {
	return &Tracker{r: r}
}

// Push adds the score of the next token and returns the running statistic r_t.
func (tr *Tracker) Push(s float64) float64 {
	defer func() { tr.t++ }()
	if len(tr.norm) > 0 {
		m := tr.norm[min(tr.t, len(tr.norm)-1)]
		s = (s - m.Mean) / m.SD
	}
	switch tr.r.Kind {
	case RuleMean:
		tr.sum += s
		return tr.sum / float64(tr.t+1)
	case RuleEMA:
		if tr.t == 0 {
			tr.ema = s
		} else {
			tr.ema = tr.r.Alpha*s + (1-tr.r.Alpha)*tr.ema
		}
		return tr.ema
	case RuleKofN:
		if len(tr.window) == tr.r.N {
			tr.window = tr.window[1:]
		}
		tr.window = append(tr.window, s)
		if len(tr.window) < tr.r.K {
			return math.Inf(-1)
		}
		tr.sorted = append(tr.sorted[:0], tr.window...)
		slices.Sort(tr.sorted)
		return tr.sorted[len(tr.sorted)-tr.r.K]
	default: // max
		return s
	}
}

// Running returns the running statistic after each score: r_0 … r_{len−1}.
func (r Rule) Running(scores []float64) []float64 {
	tr := r.Start()
	out := make([]float64, len(scores))
	for i, s := range scores {
		out[i] = tr.Push(s)
	}
	return out
}

// Scan pushes a generation's scores in order and returns the largest running statistic (−∞
// for no scores) and the first token whose statistic exceeds threshold t, or −1.
func (tr *Tracker) Scan(scores []float64, t float64) (peak float64, first int) {
	peak, first = math.Inf(-1), -1
	for i, s := range scores {
		v := tr.Push(s)
		peak = max(peak, v)
		if first < 0 && v > t {
			first = i
		}
	}
	return peak, first
}

// FirstFire returns the first token at which the rule fires with threshold t (r_t > t), or −1
// if it never does.
func (r Rule) FirstFire(scores []float64, t float64) int {
	_, first := r.Start().Scan(scores, t)
	return first
}

// Peak returns the largest running statistic of a generation: the rule fires on it exactly
// when the threshold is below its peak. A generation without scores peaks at −∞.
func (r Rule) Peak(scores []float64) float64 {
	peak, _ := r.Start().Scan(scores, math.Inf(1))
	return peak
}

// GenerationCalibration is a monitor's threshold for watching generated tokens under a rule:
// chosen so that the rule fires on at most the target fraction of clean generations. The
// calibration's rates and its NClean count generations, not tokens.
type GenerationCalibration struct {
	Rule        Rule        `json:"rule"`
	Threshold   float64     `json:"threshold"`
	Calibration Calibration `json:"calibration"`
	// Tokens is the number of scored tokens in the clean generations.
	Tokens int `json:"tokens"`
	// Standardize, when set, standardises the score of token t as (s − Mean)/SD with the
	// moments of the clean generations' scores at position t (the last entry for every later
	// position) before the rule sees it: a probe fitted on prompts, whose scores drift along
	// a generation, is then judged at each position against clean text at that position.
	Standardize []Moments `json:"standardize,omitempty"`
}

// Moments are the mean and standard deviation of scores.
type Moments struct {
	Mean float64 `json:"mean"`
	SD   float64 `json:"sd"`
}

// momentsOf returns the mean and sample standard deviation of scores, which must vary.
func momentsOf(xs []float64) (Moments, error) {
	m, sd := stat.MeanStdDev(xs, nil)
	if !positiveFinite(sd) {
		return Moments{}, fmt.Errorf("clean scores do not vary (sd %v)", sd)
	}
	return Moments{Mean: m, SD: sd}, nil
}

// Start returns a tracker of one generation under the calibration's rule and standardisation.
func (g *GenerationCalibration) Start() *Tracker {
	return &Tracker{r: g.Rule, norm: g.Standardize}
}

// FirstFire returns the first token at which the calibrated monitor fires, or −1.
func (g *GenerationCalibration) FirstFire(scores []float64) int {
	_, first := g.Start().Scan(scores, g.Threshold)
	return first
}

// MinPositionCount is the fewest clean generations a position needs for moments of its own
// under per-position standardisation; later positions share the moments of all of them.
const MinPositionCount = 50

// positionMoments returns the per-position moments of clean generations' scores: one entry
// per position while at least MinPositionCount generations reach it, then one for all later
// positions pooled.
func positionMoments(clean [][]float64) ([]Moments, error) {
	var out []Moments
	for t := 0; ; t++ {
		var xs []float64
		for _, s := range clean {
			if len(s) > t {
				xs = append(xs, s[t])
			}
		}
		pooled := len(xs) < MinPositionCount
		if pooled {
			xs = xs[:0]
			for _, s := range clean {
				if len(s) > t {
					xs = append(xs, s[t:]...)
				}
			}
		}
		if len(xs) < 2 {
			if t == 0 {
				return nil, errors.New("standardising per position needs at least 2 clean generations")
			}
			return out, nil
		}
		mo, err := momentsOf(xs)
		if err != nil {
			return nil, fmt.Errorf("position %d: %w", t, err)
		}
		out = append(out, mo)
		if pooled {
			return out, nil
		}
	}
}

// CalibrateGeneration returns the threshold at which the rule fires on at most targetFPR of
// the clean generations, each given as the scores of its tokens in order (token 0 on the last
// prompt token): CalibrateThreshold over the generations' peaks (Rule.Peak). A generation
// without tokens is an error, as is an invalid rule.
//
// With perPosition the scores are first standardised per position (GenerationCalibration's
// Standardize, from the same clean generations).
func CalibrateGeneration(r Rule, clean [][]float64, targetFPR float64, perPosition bool) (*GenerationCalibration, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if len(clean) == 0 {
		return nil, errors.New("calibrate generation: no clean generations")
	}
	g := &GenerationCalibration{Rule: r}
	for i, s := range clean {
		if len(s) == 0 {
			return nil, fmt.Errorf("calibrate generation: clean generation %d has no tokens", i)
		}
		g.Tokens += len(s)
	}
	if perPosition {
		var err error
		if g.Standardize, err = positionMoments(clean); err != nil {
			return nil, fmt.Errorf("calibrate generation: %w", err)
		}
	}
	peaks := make([]float64, len(clean))
	for i, s := range clean {
		peaks[i], _ = g.Start().Scan(s, math.Inf(1))
	}
	if slices.ContainsFunc(peaks, func(v float64) bool { return math.IsInf(v, -1) }) {
		// kofn with k above the length of a generation: it can never fire on it. Clip to the
		// smallest finite value so the quantile stays finite.
		finite := math.Inf(1)
		for _, v := range peaks {
			if !math.IsInf(v, -1) {
				finite = min(finite, v)
			}
		}
		if math.IsInf(finite, 1) {
			return nil, fmt.Errorf("calibrate generation: rule %s never applies: every clean generation is shorter than k=%d tokens", r, r.K)
		}
		for i, v := range peaks {
			if math.IsInf(v, -1) {
				peaks[i] = finite
			}
		}
	}
	cal, err := CalibrateThreshold(peaks, targetFPR)
	if err != nil {
		return nil, err
	}
	g.Threshold, g.Calibration = cal.Threshold, cal
	return g, nil
}
