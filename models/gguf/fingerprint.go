package gguf

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/x448/float16"
)

// fingerprintSample is the number of bytes read from each of three places (start, middle, end)
// of every tensor.
const fingerprintSample = 4096

// Fingerprint identifies the weights of a GGUF model without reading all of them: SHA-256 over
// the whole header (metadata and tensor infos) and three 4 KiB samples of every tensor's data
// (its start, middle and end). Any change to metadata, shapes, types or layout changes it; a
// change to the weights is caught when it touches a sampled region, as retraining,
// quantisation or a fine-tune does. It reads about 12 KiB per tensor, so it costs milliseconds
// on a multi-gigabyte file. The result is "sha256:" followed by the first 16 bytes in hex.
func Fingerprint(path string) (string, error) {
	g, err := Open(path)
	if err != nil {
		return "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("fingerprint %q: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, int64(g.HeaderSize))); err != nil {
		return "", fmt.Errorf("fingerprint %q: %w", path, err)
	}
	buf := make([]byte, fingerprintSample)
	for _, t := range g.Tensors {
		start := int64(g.DataOffset + t.Offset)
		size := int64(t.Size)
		for _, off := range []int64{0, size/2 - fingerprintSample/2, size - fingerprintSample} {
			off = max(0, min(off, size-fingerprintSample))
			n := min(int64(len(buf)), size-off)
			if _, err := f.ReadAt(buf[:n], start+off); err != nil {
				return "", fmt.Errorf("fingerprint %q: tensor %q: %w", path, t.Name, err)
			}
			var o [8]byte
			binary.LittleEndian.PutUint64(o[:], uint64(off))
			h.Write(o[:])
			h.Write(buf[:n])
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// HalfToFloat32 converts IEEE 754 binary16 bits to float32.
func HalfToFloat32(h uint16) float32 { return float16.Frombits(h).Float32() }
