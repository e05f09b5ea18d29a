package probe

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// benchData returns n rows of d features with a realistic, anisotropic
// structure: 16 shared latent factors of large variance plus unit noise,
// per-feature offsets, and a class signal along a random direction; half the
// rows are positive. Groups hold 10 consecutive rows each.
func benchData(n, d int, seed uint64) *Dataset {
	r := rand.New(rand.NewPCG(seed, 99))
	const k = 16
	load := make([]float32, k*d)
	for i := range load {
		load[i] = float32(r.NormFloat64())
	}
	offset := make([]float32, d)
	signal := make([]float32, d)
	for j := range d {
		offset[j] = float32(5 * r.NormFloat64())
		signal[j] = float32(r.NormFloat64() * 0.5 / math.Sqrt(float64(d)) * 8)
	}
	x := NewMatrix(n, d, nil)
	labels := make([]Label, n)
	groups := make([]string, n)
	f := make([]float32, k)
	for i := range n {
		row := x.Row(i)
		for c := range f {
			f[c] = float32(r.NormFloat64() * 3)
		}
		pos := i%2 == 0
		for j := range row {
			row[j] = offset[j] + float32(r.NormFloat64())
		}
		for c := range f {
			axpy32(f[c], load[c*d:(c+1)*d], row)
		}
		if pos {
			axpy32(1, signal, row)
			labels[i] = Positive
		} else {
			labels[i] = Negative
		}
		groups[i] = fmt.Sprint(i / 10)
	}
	return NewDataset(x, labels, groups, nil)
}

var benchSizes = []struct{ n, d int }{{2000, 256}, {5000, 1024}, {20000, 4096}}

// BenchmarkLogistic fits logistic regression at a fixed C and with C chosen
// by 5-fold grouped cross-validation over the default grid. It reports the
// peak Go heap (sampled) as a multiple of the float32 data.
func BenchmarkLogistic(b *testing.B) {
	for _, sz := range benchSizes {
		ds := benchData(sz.n, sz.d, 1)
		for _, m := range []Logistic{{C: 0.01}, {}} {
			name := fmt.Sprintf("C=%g/%dx%d", m.C, sz.n, sz.d)
			if m.C == 0 {
				name = fmt.Sprintf("cv/%dx%d", sz.n, sz.d)
			}
			b.Run(name, func(b *testing.B) {
				peak := heapPeak(func() {
					for b.Loop() {
						p, err := m.Fit(ds)
						if err != nil {
							b.Fatal(err)
						}
						b.ReportMetric(p.Training.Params["iterations"], "iters")
						b.ReportMetric(p.Training.Params["evaluations"], "evals")
						if m.C == 0 {
							b.ReportMetric(p.Training.CVAUROC, "cv_auroc")
						}
					}
				})
				b.ReportMetric(float64(peak)/float64(ds.X.Bytes()), "peak_heap/data")
			})
		}
	}
}

// heapPeak runs fn while sampling the Go heap every 10 ms and returns the
// largest HeapAlloc seen.
func heapPeak(fn func()) uint64 {
	runtime.GC()
	done := make(chan struct{})
	peakc := make(chan uint64)
	go func() {
		var peak uint64
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-done:
				peakc <- peak
				return
			default:
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	fn()
	close(done)
	return <-peakc
}

// BenchmarkScoreLinear scores every row of a matrix with a linear probe;
// the MB/s figure is activation bytes scored per second.
func BenchmarkScoreLinear(b *testing.B) {
	for _, d := range []int{1024, 4096} {
		n := (64 << 20) / (4 * d) // 64 MiB of activations
		ds := benchData(n, d, 2)
		p, err := MeanDiff{}.Fit(ds)
		if err != nil {
			b.Fatal(err)
		}
		dst := make([]float64, n)
		for _, w := range []int{1, 0} {
			b.Run(fmt.Sprintf("d=%d/workers=%d", d, w), func(b *testing.B) {
				b.SetBytes(ds.X.Bytes())
				for b.Loop() {
					if w == 1 {
						for i := range n {
							dst[i] = p.Score(ds.X.Row(i))
						}
					} else {
						p.ScoreRows(ds.X, nil, dst)
					}
				}
			})
		}
	}
}

// BenchmarkScoreQuadratic scores rows with a Mahalanobis probe (d² per row).
func BenchmarkScoreQuadratic(b *testing.B) {
	const n, d = 2000, 256
	ds := benchData(n, d, 3)
	p, err := Mahalanobis{}.Fit(ds)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(ds.X.Bytes())
	for b.Loop() {
		p.ScoreRows(ds.X, nil, nil)
	}
}

func BenchmarkAUROC(b *testing.B) {
	for _, n := range []int{1000, 20000} {
		r := rand.New(rand.NewPCG(1, 1))
		s := make([]float64, n)
		c := make([]bool, n)
		for i := range s {
			c[i] = i%3 == 0
			s[i] = r.NormFloat64()
			if c[i] {
				s[i]++
			}
		}
		b.Run(fmt.Sprint("auroc/", n), func(b *testing.B) {
			for b.Loop() {
				_, _ = AUROC(s, c)
			}
		})
		b.Run(fmt.Sprint("bootstrap2000/", n), func(b *testing.B) {
			for b.Loop() {
				_, _ = BootstrapAUROC(s, c, 2000, 0.95, 1)
			}
		})
	}
}

// BenchmarkFitCovariance fits the covariance-based methods.
func BenchmarkFitCovariance(b *testing.B) {
	for _, sz := range []struct{ n, d int }{{2000, 256}, {4000, 1024}} {
		ds := benchData(sz.n, sz.d, 4)
		for _, m := range []Method{LDA{}, Mahalanobis{}, Spectral{}} {
			b.Run(fmt.Sprintf("%s/%dx%d", m.Name(), sz.n, sz.d), func(b *testing.B) {
				for b.Loop() {
					if _, err := m.Fit(ds); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkLogisticPass measures one pass of the logistic loss and gradient
// over 20,000 × 4,096 rows for 1, 3 and 6 simultaneous problems (6 is 5-fold
// cross-validation plus the all-rows problem); MB/s is data read per second.
func BenchmarkLogisticPass(b *testing.B) {
	const n, d = 20000, 4096
	ds := benchData(n, d, 1)
	rows := ds.Labelled()
	data := &logisticData{x: ds.X, rows: rows, target: ds.Positives(rows), fold: make([]int, len(rows)), folds: 5}
	for i := range data.fold {
		data.fold[i] = (i / 10) % 5
	}
	means, scales := foldMoments(data, 0)
	for _, coarse := range []bool{true, false} {
		for _, k := range []int{1, 3, 6} {
			ls := newLockstep(data, k, 0)
			var batch []*objective
			for t := range k {
				ob := newObjective(d, t-1, len(rows), means[0], scales[0], coarse)
				params := make([]float64, d+1)
				for j := range d {
					params[j] = 0.001
				}
				ls.active = 1
				ls.evaluate(ob, params) // sets v and runs a first pass
				batch = append(batch, ob)
			}
			b.Run(fmt.Sprintf("coarse=%v/problems=%d", coarse, k), func(b *testing.B) {
				b.SetBytes(ds.X.Bytes())
				for b.Loop() {
					for _, ob := range batch {
						ob.done = make(chan struct{})
					}
					ls.run(batch)
				}
			})
		}
	}
}

// BenchmarkTreeBaseline fits golearn's CART on 16 principal components of
// at most 2,000 rows (TreeBaseline's default cap).
func BenchmarkTreeBaseline(b *testing.B) {
	for _, sz := range []struct{ n, d int }{{1000, 256}, {20000, 1024}} {
		ds := benchData(sz.n, sz.d, 6)
		b.Run(fmt.Sprintf("%dx%d", sz.n, sz.d), func(b *testing.B) {
			for b.Loop() {
				if _, err := (TreeBaseline{}).Fit(ds); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStore writes a store of 4,000 examples × 2 layers × 1,024 values
// (f32 and f16) and reads one layer back as a dataset; MB/s counts one
// layer's float32 bytes.
func BenchmarkStore(b *testing.B) {
	const n, d = 4000, 1024
	ds := benchData(n, d, 9)
	for _, dtype := range []string{DTypeF32, DTypeF16} {
		dir := b.TempDir()
		m := Manifest{Model: ModelInfo{Fingerprint: "bench", NEmbd: d}, Layers: []int{0, 1}, Positions: PositionLast, DType: dtype, NEmbd: d}
		b.Run("write/"+dtype, func(b *testing.B) {
			b.SetBytes(ds.X.Bytes())
			for i := 0; b.Loop(); i++ {
				sub := fmt.Sprint(dir, "/", i)
				w, err := CreateStore(sub, m, StoreOptions{ShardBytes: 8 << 20})
				if err != nil {
					b.Fatal(err)
				}
				for r := range n {
					if err := w.Append(Example{ID: fmt.Sprint(r)}, [][]float32{ds.X.Row(r), ds.X.Row(r)}); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("load/"+dtype, func(b *testing.B) {
			s, err := OpenStore(dir + "/0")
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(ds.X.Bytes())
			for b.Loop() {
				if _, err := LoadDataset(s, 1, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLoadProbe4096 saves a Mahalanobis-style probe of n_embd 4,096 (4,096 components of
// 4,096 float32 values, a normalisation) and loads it: form=binary is what Save writes,
// form=json the all-JSON form of version 2 files, for comparison (slow: hundreds of MB of
// text). It reports the file's size and the time of the one save.
func BenchmarkLoadProbe4096(b *testing.B) {
	const d = 4096
	p := quadProbe(d, d, 1)
	for _, form := range []struct {
		name string
		form fileForm
	}{{"binary", formBinary}, {"json", formJSON}} {
		b.Run("form="+form.name, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "p.json")
			start := time.Now()
			if err := p.save(path, form.form); err != nil {
				b.Fatal(err)
			}
			save := time.Since(start)
			st, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				q, err := Load(path)
				if err != nil {
					b.Fatal(err)
				}
				if len(q.Quadratic.Components) != d {
					b.Fatal("components lost")
				}
			}
			b.ReportMetric(float64(st.Size())/(1<<20), "file_MiB")
			b.ReportMetric(save.Seconds(), "save_s")
		})
	}
}

// BenchmarkScoreQuadraticRow scores single rows with a quadratic probe of d components of d
// values, the components of each row on one goroutine (workers=1) or split across GOMAXPROCS
// (workers=N, whatever parallelQuadWork says): where N beats 1 is the crossover Score uses.
// One op scores enough rows for 2^26 multiply-adds; ns/score is the time of one.
func BenchmarkScoreQuadraticRow(b *testing.B) {
	for _, d := range []int{64, 256, 1024, 1448, 2048, 4096} {
		p := quadProbe(d, d, 2)
		pp := p.prepare()
		x := make([]float32, d)
		for j := range x {
			x[j] = float32(j%5) - 2
		}
		reps := max(1, (1<<26)/(d*d))
		procs := runtime.GOMAXPROCS(0)
		for _, w := range []int{1, procs} {
			b.Run(fmt.Sprintf("d=%d/workers=%d", d, w), func(b *testing.B) {
				z, s := make([]float32, d), make([]float64, 1)
				for b.Loop() {
					for range reps {
						if w == 1 {
							pp.quadratic(x, z)
						} else {
							pp.quadraticSplit([][]float32{x}, s, w)
						}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*reps), "ns/score")
			})
		}
	}
}

// BenchmarkScoreRowsQuadratic4096 scores rows with a probe of 4,096 components of 4,096 values
// (64 MiB of float32): split=components is ScoreRows for fewer than 4·GOMAXPROCS rows (the
// components across GOMAXPROCS goroutines), split=rows what it does without that (rows across
// goroutines; one row on one goroutine), for 16 rows the rows split in blocks of 8 that read
// each component once. ns/row is the time per row.
func BenchmarkScoreRowsQuadratic4096(b *testing.B) {
	const d = 4096
	p := quadProbe(d, d, 3)
	x := NewMatrix(16, d, nil)
	for i := range x.Data {
		x.Data[i] = float32(i%5) - 2
	}
	for _, c := range []struct {
		rows  int
		split string
	}{{1, "components"}, {1, "rows"}, {3, "components"}, {3, "rows"}, {16, "rows"}} {
		b.Run(fmt.Sprintf("rows=%d/split=%s", c.rows, c.split), func(b *testing.B) {
			if c.split == "rows" {
				defer func(old int64) { parallelQuadWork = old }(parallelQuadWork)
				parallelQuadWork = math.MaxInt64
			}
			idx := make([]int, c.rows)
			for i := range idx {
				idx[i] = i
			}
			for b.Loop() {
				p.ScoreRows(x, idx, nil)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*c.rows), "ns/row")
		})
	}
}
