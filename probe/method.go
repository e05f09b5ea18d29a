package probe

import (
	"fmt"
	"slices"
	"strings"
)

// Method fits a probe to a dataset. Supervised methods use the rows labelled
// Positive and Negative and ignore Unknown ones; Mahalanobis uses the Negative
// (clean) rows only; Spectral uses every row; Contrast treats the dataset as
// contrast pairs. The returned probe carries the dataset's provenance
// (DatasetInfo) and a training summary; its threshold is not calibrated (see
// Probe.Calibrate).
type Method interface {
	// Name returns the method's name as written in probe files.
	Name() string
	// Fit fits a probe to d. Conditions that depend on the data (too few
	// rows, a missing class) are returned as errors.
	Fit(d *Dataset) (*Probe, error)
}

// Method names accepted by NewMethod.
const (
	MethodMeanDiff         = "meandiff"
	MethodMeanDiffWhitened = "meandiff-whitened"
	MethodLogistic         = "logistic"
	MethodLDA              = "lda"
	MethodContrast         = "contrast"
	MethodMahalanobis      = "mahalanobis"
	MethodSpectral         = "spectral"
)

// MethodNames returns the names NewMethod accepts.
func MethodNames() []string {
	return []string{MethodMeanDiff, MethodMeanDiffWhitened, MethodLogistic, MethodLDA, MethodContrast, MethodMahalanobis, MethodSpectral}
}

// Options are the settings of every method in one flat struct, for command
// lines; each method reads the fields it documents. Zero values mean the
// defaults.
type Options struct {
	// C is logistic regression's inverse L2 strength; 0 chooses it from Cs
	// by grouped cross-validation.
	C float64
	// Cs are the candidate values of C (default DefaultCs).
	Cs []float64
	// Folds is the number of grouped folds used to choose C (default 5).
	Folds int
	// Shrinkage is the covariance shrinkage δ of LDA, whitened mean
	// difference and Mahalanobis: 0 for the Ledoit–Wolf estimate, a value in
	// (0, 1] for a fixed δ, negative for none.
	Shrinkage float64
	// Seed makes fold assignment and random starts reproducible.
	Seed uint64
	// Workers bounds the goroutines of the logistic solver (default
	// GOMAXPROCS).
	Workers int
}

// NewMethod returns the method called name configured from opts.
func NewMethod(name string, opts Options) (Method, error) {
	switch name {
	case MethodMeanDiff:
		return MeanDiff{}, nil
	case MethodMeanDiffWhitened:
		return MeanDiff{Whiten: true, Shrinkage: opts.Shrinkage}, nil
	case MethodLogistic:
		return Logistic{C: opts.C, Cs: slices.Clone(opts.Cs), Folds: opts.Folds, Seed: opts.Seed, Workers: opts.Workers}, nil
	case MethodLDA:
		return LDA{Shrinkage: opts.Shrinkage}, nil
	case MethodContrast:
		return Contrast{}, nil
	case MethodMahalanobis:
		return Mahalanobis{Shrinkage: opts.Shrinkage}, nil
	case MethodSpectral:
		return Spectral{Seed: opts.Seed}, nil
	}
	return nil, fmt.Errorf("unknown method %q (want %s)", name, strings.Join(MethodNames(), ", "))
}

// classRows returns the indices of d's positive and negative rows, with an
// error if either class is empty.
func classRows(d *Dataset, method string) (pos, neg []int, err error) {
	pos, neg = d.WithLabel(Positive), d.WithLabel(Negative)
	if len(pos) == 0 || len(neg) == 0 {
		return nil, nil, fmt.Errorf("%s: needs positive and negative rows, have %d positive and %d negative", method, len(pos), len(neg))
	}
	return pos, neg, nil
}
