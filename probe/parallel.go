package probe

import (
	"math"
	"runtime"
	"sync"
)

// workers returns the number of goroutines to use for n items when the caller
// asked for want (≤ 0 means GOMAXPROCS), never more than n and at least 1.
func workers(want, n int) int {
	if want <= 0 {
		want = runtime.GOMAXPROCS(0)
	}
	return max(1, min(want, n))
}

// parallelFor splits [0, n) into w contiguous chunks and calls fn(worker, lo,
// hi) for each chunk on its own goroutine, returning when all are done.
func parallelFor(n, w int, fn func(worker, lo, hi int)) {
	if w <= 1 || n <= 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for k := 0; k < w; k++ {
		lo, hi := k*n/w, (k+1)*n/w
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(k, lo, hi)
		}()
	}
	wg.Wait()
}

// sqrtPos returns √x for x > 0 and 0 otherwise (rounding can make a variance
// computed as a difference slightly negative).
func sqrtPos(x float64) float64 {
	if x > 0 {
		return math.Sqrt(x)
	}
	return 0
}
