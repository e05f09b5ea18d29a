// Package position names the token positions that a capture keeps, a dump stores and a probe
// reads: one type for bindings (capture), probe (manifests, datasets, probe files) and the CLI.
// probe and bindings re-export it (probe.Position, bindings.Positions).
package position

import "fmt"

// Position selects token positions of a prompt: every token, the last one, or the mean over
// the prompt's tokens.
type Position string

// The positions.
const (
	All  Position = "all"
	Last Position = "last"
	Mean Position = "mean"
)

// Parse checks a position name.
func Parse(s string) (Position, error) {
	switch p := Position(s); p {
	case All, Last, Mean:
		return p, nil
	}
	return "", fmt.Errorf("position %q: want all, last or mean", s)
}
