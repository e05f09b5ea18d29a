package probe

// Confusion counts a detector's decisions at one threshold against the true
// classes. The rates below return 0 where their denominator is 0 (as
// scikit-learn's zero_division=0), so that reports never hold NaN.
type Confusion struct {
	TP int `json:"tp"` // positives that fired
	FP int `json:"fp"` // negatives that fired
	TN int `json:"tn"` // negatives that did not fire
	FN int `json:"fn"` // positives that did not fire
}

// ConfusionAt returns the confusion matrix of the rule "fires when score >
// threshold" (the rule of a calibrated probe). It panics if the lengths
// differ.
func ConfusionAt(scores []float64, positive []bool, threshold float64) Confusion {
	if len(scores) != len(positive) {
		panic("probe: scores and classes have different lengths")
	}
	var c Confusion
	for i, s := range scores {
		fired := s > threshold
		switch {
		case fired && positive[i]:
			c.TP++
		case fired:
			c.FP++
		case positive[i]:
			c.FN++
		default:
			c.TN++
		}
	}
	return c
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Precision returns TP / (TP + FP).
func (c Confusion) Precision() float64 { return ratio(c.TP, c.TP+c.FP) }

// Recall returns the true positive rate TP / (TP + FN).
func (c Confusion) Recall() float64 { return ratio(c.TP, c.TP+c.FN) }

// TPR returns the true positive rate TP / (TP + FN), the same as Recall.
func (c Confusion) TPR() float64 { return c.Recall() }

// FPR returns the false positive rate FP / (FP + TN).
func (c Confusion) FPR() float64 { return ratio(c.FP, c.FP+c.TN) }

// Accuracy returns (TP + TN) / (TP + FP + TN + FN).
func (c Confusion) Accuracy() float64 { return ratio(c.TP+c.TN, c.TP+c.FP+c.TN+c.FN) }

// F1 returns the harmonic mean of precision and recall,
// 2·TP / (2·TP + FP + FN).
func (c Confusion) F1() float64 { return ratio(2*c.TP, 2*c.TP+c.FP+c.FN) }
