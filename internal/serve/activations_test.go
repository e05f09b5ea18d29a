package serve

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stTensor is a tensor read back from a safetensors body.
type stTensor struct {
	shape []int
	data  []float32
}

// parseSafetensors reads a safetensors body of F32 tensors.
func parseSafetensors(t *testing.T, b []byte) (map[string]stTensor, map[string]string) {
	t.Helper()
	require.GreaterOrEqual(t, len(b), 8)
	n := binary.LittleEndian.Uint64(b[:8])
	require.LessOrEqual(t, 8+n, uint64(len(b)))
	var header map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b[8:8+n], &header))
	body := b[8+n:]
	tensors := map[string]stTensor{}
	var meta map[string]string
	for name, raw := range header {
		if name == "__metadata__" {
			require.NoError(t, json.Unmarshal(raw, &meta))
			continue
		}
		var h struct {
			DType   string `json:"dtype"`
			Shape   []int  `json:"shape"`
			Offsets [2]int `json:"data_offsets"`
		}
		require.NoError(t, json.Unmarshal(raw, &h))
		require.Equal(t, "F32", h.DType)
		raw := body[h.Offsets[0]:h.Offsets[1]]
		data := make([]float32, len(raw)/4)
		for i := range data {
			data[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		require.Equal(t, h.Shape[0]*h.Shape[1], len(data))
		tensors[name] = stTensor{shape: h.Shape, data: data}
	}
	return tensors, meta
}

// expectedRows returns the fake model's rows of a prompt at a layer and position.
func expectedRows(prompt string, layer int, pos string) [][]float32 {
	pieces := append([]string{""}, fakePieces(prompt)...)
	var rows [][]float32
	for _, p := range pieces {
		rows = append(rows, fakeRow(p, layer))
	}
	switch pos {
	case "last":
		return rows[len(rows)-1:]
	case "mean":
		mean := make([]float32, fakeNEmbd)
		for _, r := range rows {
			for j, v := range r {
				mean[j] += v / float32(len(rows))
			}
		}
		return [][]float32{mean}
	}
	return rows
}

func flatten(rows [][]float32) []float32 {
	var out []float32
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

// TestActivations covers /v1/activations in both formats and its limits.
func TestActivations(t *testing.T) {
	const prompt = "build a BOMB"
	ts := newTestServer(t)

	t.Run("safetensors, every token, negative layer", func(t *testing.T) {
		resp, data := ts.do(t, http.MethodPost, "/v1/activations", map[string]any{"prompt": prompt, "layers": []int{1, -1}, "positions": "all"})
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", data)
		assert.Equal(t, "application/octet-stream", resp.Header.Get("Content-Type"))
		tensors, meta := parseSafetensors(t, data)
		require.Len(t, tensors, 2)
		for _, l := range []int{1, 3} {
			tt, ok := tensors["layer."+strconv.Itoa(l)]
			require.True(t, ok, "layer %d", l)
			assert.Equal(t, []int{4, fakeNEmbd}, tt.shape)
			assert.Equal(t, flatten(expectedRows(prompt, l, "all")), tt.data)
		}
		assert.Equal(t, fakeFingerprint, meta["fingerprint"])
		assert.Equal(t, "all", meta["positions"])
		assert.Equal(t, "4", meta["prompt_tokens"])
		job := ts.eng.lastJob()
		assert.True(t, job.AllRows)
		assert.Zero(t, job.MaxTokens)
	})
	t.Run("json, mean", func(t *testing.T) {
		out := ts.post(t, "/v1/activations", map[string]any{"prompt": []string{prompt}, "layers": []int{2}, "positions": "mean", "format": "json"})
		assert.Equal(t, "mean", out["positions"])
		assert.EqualValues(t, 4, out["prompt_tokens"])
		rows := out["layers"].(map[string]any)["2"].([]any)
		require.Len(t, rows, 1)
		want := expectedRows(prompt, 2, "mean")[0]
		for j, v := range rows[0].([]any) {
			assert.InDelta(t, want[j], v, 1e-6)
		}
	})
	t.Run("default last, chat", func(t *testing.T) {
		resp, data := ts.do(t, http.MethodPost, "/v1/activations", map[string]any{"messages": []map[string]any{{"role": "user", "content": "x"}}, "layers": []int{0}})
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", data)
		tensors, meta := parseSafetensors(t, data)
		assert.Equal(t, "last", meta["positions"])
		assert.Equal(t, fakeRow("\n\nAssistant:", 0), tensors["layer.0"].data)
	})

	errs := []struct {
		name   string
		body   map[string]any
		status int
		msg    string
	}{
		{"layer out of range", map[string]any{"prompt": prompt, "layers": []int{4}}, 400, "layer 4 is out of range"},
		{"negative out of range", map[string]any{"prompt": prompt, "layers": []int{-5}}, 400, "layer -5 is out of range"},
		{"no layers", map[string]any{"prompt": prompt}, 400, "layers is missing"},
		{"bad positions", map[string]any{"prompt": prompt, "layers": []int{1}, "positions": "first"}, 400, "want all, last or mean"},
		{"bad format", map[string]any{"prompt": prompt, "layers": []int{1}, "format": "npy"}, 400, `format "npy"`},
		{"two prompts", map[string]any{"prompt": []string{"a", "b"}, "layers": []int{1}}, 400, "one prompt per request"},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := ts.do(t, http.MethodPost, "/v1/activations", tc.body)
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Contains(t, errorOf(t, data).Message, tc.msg)
		})
	}
}

// TestActivationsLimit checks that a request for more rows than MaxActivationBytes is refused.
func TestActivationsLimit(t *testing.T) {
	ts := newTestServer(t, func(c *Config, _ *fakeEngine) { c.MaxActivationBytes = 64 })
	// 4 tokens × 4 values × 4 bytes = 64 bytes a layer: one layer fits, two do not.
	resp, data := ts.do(t, http.MethodPost, "/v1/activations", map[string]any{"prompt": "build a BOMB", "layers": []int{1}, "positions": "all"})
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", data)
	resp, data = ts.do(t, http.MethodPost, "/v1/activations", map[string]any{"prompt": "build a BOMB", "layers": []int{1, 2}, "positions": "all"})
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Contains(t, errorOf(t, data).Message, "over the limit of 64 bytes")
}
