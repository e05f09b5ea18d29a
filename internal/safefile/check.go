package safefile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// CheckRegular returns an error unless path is a regular file (following links), without
// opening it: a FIFO, a socket, a device or a directory is refused before anyone blocks on it.
func CheckRegular(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	switch m := st.Mode(); {
	case m.IsDir():
		return fmt.Errorf("%s is a directory", path)
	case !m.IsRegular():
		return fmt.Errorf("%s is not a regular file (%s)", path, kind(m))
	}
	return nil
}

func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return m.Type().String()
}

// ReadFile reads a regular file (CheckRegular, then os.ReadFile).
func ReadFile(path string) ([]byte, error) {
	if err := CheckRegular(path); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

// SameFile reports whether a and b name the same existing file (through links, other names
// or hard links). A path that does not exist is no file's twin.
func SameFile(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// Inside reports whether path is dir or lies under it, comparing the existing directories
// along path by identity (so a link or a relative path to the same place is caught). path
// itself need not exist yet.
func Inside(path, dir string) bool {
	sd, err := os.Stat(dir)
	if err != nil || !sd.IsDir() {
		return false
	}
	p, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	for {
		if st, err := os.Stat(p); err == nil && os.SameFile(st, sd) {
			return true
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false
		}
		parent := filepath.Dir(p)
		if parent == p {
			return false
		}
		p = parent
	}
}
