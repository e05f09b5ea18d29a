package srchash

import (
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"
)

func TestOf(t *testing.T) {
	a := fstest.MapFS{"a.go": {Data: []byte("package a\n")}, "sub/b.c": {Data: []byte("int b;")}}
	base := Of(a)
	require.Len(t, base, 64)
	require.Equal(t, base, Of(a), "deterministic")

	edited := fstest.MapFS{"a.go": {Data: []byte("package a \n")}, "sub/b.c": {Data: []byte("int b;")}}
	require.NotEqual(t, base, Of(edited), "a one-byte edit changes the hash")

	renamed := fstest.MapFS{"c.go": {Data: []byte("package a\n")}, "sub/b.c": {Data: []byte("int b;")}}
	require.NotEqual(t, base, Of(renamed), "a rename changes the hash")

	withTest := fstest.MapFS{"a.go": {Data: []byte("package a\n")}, "sub/b.c": {Data: []byte("int b;")}, "a_test.go": {Data: []byte("x")}}
	require.Equal(t, base, Of(withTest), "test files do not count")

	// Which file system a file comes from counts: moving a file between packages is a change.
	require.NotEqual(t, Of(a, fstest.MapFS{}), Of(fstest.MapFS{}, a))
}
