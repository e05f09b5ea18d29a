package probe

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"
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
// hi) for each chunk on its own goroutine (the last on the caller's), returning
// when all are done.
func parallelFor(n, w int, fn func(worker, lo, hi int)) {
	if w <= 1 || n <= 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for k := 0; k < w-1; k++ {
		lo, hi := k*n/w, (k+1)*n/w
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(k, lo, hi)
		}()
	}
	fn(w-1, (w-1)*n/w, n)
	wg.Wait()
}

// parallelChunks calls fn(lo, hi) for consecutive chunks of [0, n) of chunk
// items (the last maybe shorter) on w goroutines, the caller's among them, each
// taking the next chunk when done with one, and returns when all are done. A
// goroutine whose core is taken by another process then delays one chunk, not
// a w-th of the work.
func parallelChunks(n, w, chunk int, fn func(lo, hi int)) {
	chunk = max(1, chunk)
	var next atomic.Int64
	work := func() {
		for {
			lo := int(next.Add(int64(chunk))) - chunk
			if lo >= n {
				return
			}
			fn(lo, min(lo+chunk, n))
		}
	}
	var wg sync.WaitGroup
	for range min(w, (n+chunk-1)/chunk) - 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			work()
		}()
	}
	work()
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
