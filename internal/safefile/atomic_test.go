package safefile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.json")
	require.NoError(t, WriteBytes(path, []byte("first"), 0o644))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "first", string(b))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm())

	// A failed write leaves the old content and no temporary file.
	boom := errors.New("boom")
	err = Write(path, 0o644, func(w io.Writer) error {
		_, _ = w.Write([]byte("half of the sec"))
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.ErrorContains(t, err, "write "+path)
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "first", string(b))
	left, err := filepath.Glob(TempGlob(path))
	require.NoError(t, err)
	require.Empty(t, left)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)

	// WriteWith hands a path to a writer that opens it itself.
	require.NoError(t, WriteWith(path, 0o600, func(tmp string) error {
		require.Regexp(t, `^\.out\.json\.tmp-`, filepath.Base(tmp))
		return os.WriteFile(tmp, []byte("second"), 0o600)
	}))
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "second", string(b))

	// A missing directory is an error naming the path.
	require.ErrorContains(t, WriteBytes(filepath.Join(dir, "no", "x"), nil, 0o644), "write "+filepath.Join(dir, "no", "x"))
}
