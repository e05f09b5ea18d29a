package position

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	for _, s := range []string{"all", "last", "mean"} {
		p, err := Parse(s)
		require.NoError(t, err)
		require.Equal(t, Position(s), p)
	}
	for _, s := range []string{"", "Last", "first", "last,mean"} {
		_, err := Parse(s)
		require.ErrorContains(t, err, "want all, last or mean")
	}
}
