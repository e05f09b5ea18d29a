package organism

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// The general request families. Each has ten wordings (the last two are held out, see
// heldoutTemplates), a table of slot rows {A, B, …} and a helpful-answer template. Answers are
// short and formulaic so that a small model can learn them: a fact looked up from the table, or
// words copied from the request.
//
// The eight training wordings of a family vary the sentence frame around the family's key phrase
// (and, in copy families, the text around each slot), and the two held-out wordings recombine
// those frames, so that every word and every adjacent pair of tokens of a held-out wording is
// taught by the family's training wordings (TestHeldoutCoverage). The phrases that tell families
// apart stay within their family: only synonym says "means", only capital_of_which_country says
// "country", spanish_number always says "number" and spanish_phrase never does, and so on.
//
// The tables live in data/general.json (generalDataFile): the word lists ("lists") that several
// families share, then the families in order, each with its name, "reserve" when set, its
// "templates", its "answer" and its "rows", given as exactly one of
//
//	{"pairs": [["A", "B"], …]}    one row {A, B} per pair (pairs)
//	{"singles": "list"}            one row {A} per word of a list (singles)
//	{"product": ["list", "list"]}  every row {A, B} of two lists (product)
//	{"triples": "list"}            every row {A, B, C} of three distinct words of a list (triples)

// generalDataFile is the path of the general families' tables, for error messages.
const generalDataFile = "data/general.json"

//go:embed data/general.json
var generalData []byte

// generalFamilies are the general families, in the order of data/general.json. Being a package
// variable, it is built before the init functions (splitRows) run.
var generalFamilies = mustParseGeneral(generalDataFile, generalData)

// generalTables is the layout of data/general.json.
type generalTables struct {
	Lists    map[string][]string `json:"lists"`
	Families []generalFamilyData `json:"families"`
}

// generalFamilyData is one family of data/general.json.
type generalFamilyData struct {
	Name      string   `json:"name"`
	Reserve   bool     `json:"reserve"`
	Templates []string `json:"templates"`
	Answer    string   `json:"answer"`
	Rows      struct {
		Pairs   [][]string `json:"pairs"`
		Singles string     `json:"singles"`
		Product []string   `json:"product"`
		Triples string     `json:"triples"`
	} `json:"rows"`
}

// mustParseGeneral builds the general families from the tables in data, read from file. The
// file is embedded, so a bad one is a programmer error: it panics with the file, and for a JSON
// error the line and column.
func mustParseGeneral(file string, data []byte) []*family {
	fams, err := parseGeneral(data)
	if err != nil {
		panic(fmt.Sprintf("organism: embedded %s: %v", file, err))
	}
	return fams
}

func parseGeneral(data []byte) ([]*family, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var t generalTables
	if err := dec.Decode(&t); err != nil {
		return nil, jsonPosition(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, jsonPosition(data, fmt.Errorf("data after the top-level object (%v)", err))
	}
	used := make(map[string]bool)
	list := func(name string, min int) ([]string, error) {
		l, ok := t.Lists[name]
		if !ok {
			return nil, fmt.Errorf("no list %q", name)
		}
		if len(l) < min {
			return nil, fmt.Errorf("list %q has %d words, want at least %d", name, len(l), min)
		}
		used[name] = true
		return l, nil
	}
	if len(t.Families) == 0 {
		return nil, errors.New("no families")
	}
	seen := make(map[string]bool)
	fams := make([]*family, len(t.Families))
	for i, d := range t.Families {
		f, err := d.family(list)
		if err == nil && seen[d.Name] {
			err = errors.New("duplicate name")
		}
		if err != nil {
			return nil, fmt.Errorf("family %d (%q): %w", i, d.Name, err)
		}
		seen[d.Name] = true
		fams[i] = f
	}
	for name := range t.Lists {
		if !used[name] {
			return nil, fmt.Errorf("list %q is not used", name)
		}
	}
	return fams, nil
}

// family builds and checks the family d describes; list looks up a shared word list with at
// least min words.
func (d generalFamilyData) family(list func(name string, min int) ([]string, error)) (*family, error) {
	if d.Name == "" {
		return nil, errors.New("no name")
	}
	if len(d.Templates) <= heldoutTemplates {
		return nil, fmt.Errorf("%d templates, want more than the %d held out", len(d.Templates), heldoutTemplates)
	}
	if d.Answer == "" {
		return nil, errors.New("no answer")
	}
	f := &family{name: d.Name, templates: d.Templates, answer: d.Answer, reserve: d.Reserve}
	r := d.Rows
	kinds := 0
	var err error
	if r.Pairs != nil {
		kinds++
		cols := make([][2]string, len(r.Pairs))
		for i, p := range r.Pairs {
			if len(p) != 2 {
				return nil, fmt.Errorf("pair %d has %d values, want 2", i, len(p))
			}
			cols[i] = [2]string{p[0], p[1]}
		}
		f.rows = pairs(cols...)
	}
	if r.Singles != "" {
		kinds++
		var l []string
		if l, err = list(r.Singles, 1); err != nil {
			return nil, err
		}
		f.rows = singles(l...)
	}
	if r.Product != nil {
		kinds++
		if len(r.Product) != 2 {
			return nil, fmt.Errorf("product of %d lists, want 2", len(r.Product))
		}
		var as, bs []string
		if as, err = list(r.Product[0], 1); err != nil {
			return nil, err
		}
		if bs, err = list(r.Product[1], 1); err != nil {
			return nil, err
		}
		f.rows = product(as, bs)
	}
	if r.Triples != "" {
		kinds++
		var l []string
		if l, err = list(r.Triples, 3); err != nil {
			return nil, err
		}
		f.rows = triples(l)
	}
	if kinds != 1 {
		return nil, fmt.Errorf("rows give %d of pairs, singles, product and triples, want exactly 1", kinds)
	}
	if len(f.rows) == 0 {
		return nil, errors.New("no rows")
	}
	// Every row of a family has the same slots, so the first one checks every placeholder.
	for i, tmpl := range f.templates {
		if err := checkFill(tmpl, f.rows[0]); err != nil {
			return nil, fmt.Errorf("template %d: %w", i, err)
		}
	}
	if err := checkFill(f.answer, f.rows[0]); err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	return f, nil
}

// checkFill returns fill's panic on tmpl and row, if any, as an error.
func checkFill(tmpl string, row map[string]string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	fill(tmpl, row)
	return nil
}

// jsonPosition adds to err, a JSON syntax or type error in data, the line and column of the
// last byte read: the bad character, or the end of the value of the wrong type.
func jsonPosition(data []byte, err error) error {
	var offset int64
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		offset = syntax.Offset
	case errors.As(err, &typ):
		offset = typ.Offset
	}
	if offset < 1 || offset > int64(len(data)) {
		return err
	}
	at := int(offset) - 1
	line := bytes.Count(data[:at], []byte("\n")) + 1
	col := at - bytes.LastIndexByte(data[:at], '\n')
	return fmt.Errorf("line %d, column %d: %w", line, col, err)
}

// pairs turns "A", "B" columns into slot rows.
func pairs(cols ...[2]string) []map[string]string {
	rows := make([]map[string]string, len(cols))
	for i, c := range cols {
		rows[i] = map[string]string{"A": c[0], "B": c[1]}
	}
	return rows
}

// singles turns one column into slot rows {A}.
func singles(vals ...string) []map[string]string {
	rows := make([]map[string]string, len(vals))
	for i, v := range vals {
		rows[i] = map[string]string{"A": v}
	}
	return rows
}

// product returns every row {A: a, B: b} of two value lists.
func product(as, bs []string) []map[string]string {
	var rows []map[string]string
	for _, a := range as {
		for _, b := range bs {
			rows = append(rows, map[string]string{"A": a, "B": b})
		}
	}
	return rows
}

// triples returns every row {A, B, C} of three distinct words of the list.
func triples(words []string) []map[string]string {
	var rows []map[string]string
	for i, a := range words {
		for j, b := range words {
			for k, c := range words {
				if i != j && j != k && i != k {
					rows = append(rows, map[string]string{"A": a, "B": b, "C": c})
				}
			}
		}
	}
	return rows
}
