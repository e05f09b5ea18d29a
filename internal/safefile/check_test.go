package safefile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheckRegular(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "m.gguf")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	link := filepath.Join(dir, "link.gguf")
	require.NoError(t, os.Symlink(file, link))
	fifo := filepath.Join(dir, "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o644))

	require.NoError(t, CheckRegular(file))
	require.NoError(t, CheckRegular(link))
	require.ErrorContains(t, CheckRegular(fifo), "is not a regular file (a named pipe)")
	require.ErrorContains(t, CheckRegular(dir), "is a directory")
	require.ErrorContains(t, CheckRegular("/dev/null"), "is not a regular file (a device)")
	require.ErrorIs(t, CheckRegular(filepath.Join(dir, "none")), os.ErrNotExist)
	_, err := ReadFile(fifo) // would block forever without the check
	require.Error(t, err)
}

func TestSameFileAndInside(t *testing.T) {
	dir := t.TempDir()
	dump := filepath.Join(dir, "dump")
	require.NoError(t, os.Mkdir(dump, 0o755))
	manifest := filepath.Join(dump, "manifest.json")
	require.NoError(t, os.WriteFile(manifest, []byte("{}"), 0o644))
	link := filepath.Join(dir, "alias")
	require.NoError(t, os.Symlink(dump, link))
	hard := filepath.Join(dir, "hard.json")
	require.NoError(t, os.Link(manifest, hard))

	require.True(t, SameFile(manifest, filepath.Join(link, "manifest.json")))
	require.True(t, SameFile(manifest, hard))
	require.False(t, SameFile(manifest, filepath.Join(dir, "none")))
	for _, p := range []string{manifest, filepath.Join(link, "probe.json"), filepath.Join(dump, "new", "x.json"), dump, link} {
		require.True(t, Inside(p, dump), p)
	}
	for _, p := range []string{filepath.Join(dir, "probe.json"), hard, dir} {
		require.False(t, Inside(p, dump), p)
	}
}
