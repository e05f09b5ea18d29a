// Package safefile is how probe touches files it does not trust or must not half-write.
//
// Writes: the content goes to a temporary file in the target's directory, which is synced,
// given its permissions and renamed over the target, and the directory is synced; so a reader,
// or the disk after a crash, sees the old file or the new one, never a part. A failed write
// removes its temporary file. Reads of models, probe files and dumps: CheckRegular refuses a
// FIFO, socket or device before anything opens it (and blocks), and SameFile and Inside compare
// paths by file identity, so that no output replaces or lands inside an input.
package safefile

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// TempGlob is the glob pattern of the temporary files a write of path uses (a crash can leave
// one behind): ".NAME.tmp-*" beside path.
func TempGlob(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
}

// Write writes path with perm through write, which gets a buffered writer.
func Write(path string, perm fs.FileMode, write func(io.Writer) error) error {
	return WriteWith(path, perm, func(tmp string) error {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		err = write(bw)
		if err == nil {
			err = bw.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// WriteBytes writes data to path with perm.
func WriteBytes(path string, data []byte, perm fs.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteWith is Write for a writer that needs a path (a C library writing the file itself):
// write gets the temporary file's name, already created, and fills it; WriteWith then syncs
// it, sets perm and renames it to path. Errors name path.
func WriteWith(path string, perm fs.FileMode, write func(tmp string) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	f.Close()
	defer func() {
		if err != nil {
			os.Remove(tmp)
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	if err := write(tmp); err != nil {
		return err
	}
	if err := syncFile(tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, perm); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return SyncDir(filepath.Dir(path))
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncDir flushes a directory's entries (renames, links) to disk. Some file systems cannot
// sync a directory; the rename still stands, so that failure is not an error.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	_ = d.Sync()
	return d.Close()
}
