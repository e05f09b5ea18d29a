package organism

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// generalJSON is a small valid data/general.json with one family whose rows are given by kind.
func generalJSON(rows, answer string) string {
	return `{
	"lists": {"people": ["Ann", "Bo", "Cy"]},
	"families": [{
		"name": "f",
		"templates": ["a {A}", "b {A}", "c {A}"],
		"answer": "` + answer + `",
		"rows": ` + rows + `
	}]
}`
}

func TestParseGeneral(t *testing.T) {
	fams, err := parseGeneral([]byte(generalJSON(`{"triples": "people"}`, " {C}")))
	require.NoError(t, err)
	require.Len(t, fams, 1)
	assert.Equal(t, "f", fams[0].name)
	assert.Equal(t, triples([]string{"Ann", "Bo", "Cy"}), fams[0].rows)

	fams, err = parseGeneral([]byte(generalJSON(`{"product": ["people", "people"]}`, " {B}")))
	require.NoError(t, err)
	assert.Len(t, fams[0].rows, 9)

	for name, c := range map[string]struct{ data, want string }{
		"syntax":       {"{\n\t\"lists\": {},\n\t\"families\": [}\n", "line 3, column 15"},
		"type":         {`{"lists": {}, "families": [{"name": 1}]}`, "line 1, column"},
		"unknown key":  {generalJSON(`{"pair": [["x", "y"]]}`, " {A}"), `unknown field "pair"`},
		"trailing":     {generalJSON(`{"singles": "people"}`, " {A}") + "{}", "data after"},
		"no rows":      {generalJSON(`{}`, " {A}"), "want exactly 1"},
		"two kinds":    {generalJSON(`{"singles": "people", "triples": "people"}`, " {A}"), "want exactly 1"},
		"pair arity":   {generalJSON(`{"pairs": [["x", "y", "z"]]}`, " {A}"), "pair 0 has 3 values"},
		"empty pairs":  {generalJSON(`{"pairs": []}`, " {A}"), "no rows"},
		"missing list": {generalJSON(`{"singles": "nobody"}`, " {A}"), `no list "nobody"`},
		"slot":         {generalJSON(`{"singles": "people"}`, " {B}"), `answer: organism: template slot "B" missing`},
		"unused list":  {generalJSON(`{"pairs": [["x", "y"]]}`, " {B}"), `list "people" is not used`},
	} {
		_, err := parseGeneral([]byte(c.data))
		require.Error(t, err, name)
		assert.Contains(t, err.Error(), c.want, name)
	}

	assert.PanicsWithValue(t,
		fmt.Sprintf("organism: embedded %s: family 0 (\"f\"): pair 0 has 1 values, want 2", generalDataFile),
		func() { mustParseGeneral(generalDataFile, []byte(generalJSON(`{"pairs": [["x"]]}`, " {A}"))) })
}
