// Package srchash hashes a package's own source files, so that a version that must change
// whenever the code changes (the organism cache key) does so by itself.
package srchash

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"strings"
)

// Of returns a hex SHA-256 over the files of each file system, in order: every file's path and
// contents, walked in lexical order. Test files (*_test.go) are left out, so editing a test
// does not change the hash. A file system that cannot be read is a programmer error (they are
// embedded) and panics.
func Of(fsyss ...fs.FS) string {
	h := sha256.New()
	for i, fsys := range fsyss {
		err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := fs.ReadFile(fsys, path)
			if err != nil {
				return err
			}
			h.Write([]byte{byte(i)})
			h.Write([]byte(path))
			h.Write([]byte{0})
			h.Write(b)
			h.Write([]byte{0})
			return nil
		})
		if err != nil {
			panic("srchash: " + err.Error())
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}
