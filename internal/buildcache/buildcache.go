// Package buildcache locates the repository's build directory, where tests keep the models
// they build (the tiny organism takes minutes to train; every test package reuses one copy).
package buildcache

import (
	"errors"
	"os"
	"path/filepath"
)

// Dir returns build/<name> under the module root (the nearest directory above the working
// directory that holds go.mod), creating it.
func Dir(name string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("buildcache: no go.mod above the working directory")
		}
		dir = parent
	}
	out := filepath.Join(dir, "build", name)
	return out, os.MkdirAll(out, 0o755)
}
