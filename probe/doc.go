// Package probe turns residual-stream activations into calibrated backdoor
// detectors: it stores activation dumps, loads them as datasets, fits linear
// and unsupervised probes, evaluates them with ranking metrics and grouped
// cross-validation, calibrates their thresholds and saves them as versioned
// JSON (safetensors for large arrays). It is pure Go (gonum; AVX2 assembly
// kernels with a portable fallback, build tag purego), imports neither the
// llama.cpp bindings nor the models, and builds with CGO_ENABLED=0.
//
// # Activation stores
//
// A store is a directory: manifest.json (Manifest, a header: model
// fingerprint, layers, capture point, positions all|last|mean, dtype f32|f16,
// counts and the shard list), shards shard-00000.safetensors, … holding one
// tensor layer.N of shape [rows, n_embd] per layer, loadable with Python's
// safetensors.numpy.load_file, and beside each shard
// shard-00000.examples.jsonl, one Example per line (id, label, group, tokens,
// pieces and rows) in row order.
//
//	w, err := probe.CreateStore(dir, probe.Manifest{…}, probe.StoreOptions{ShardBytes: 256 << 20})
//	err = w.Append(example, acts) // acts[l]: rows × n_embd floats of Layers[l]
//	err = w.Flush()               // optional checkpoint (on a signal, say)
//	err = w.Close()               // last shard, manifest marked complete
//
// The writer holds at most two shards (the one it fills and the one it writes
// in the background) and keeps a 16-byte hash per example id; each shard and
// its examples file are written under a temporary name, synced and renamed,
// and the manifest is then rewritten atomically, so a crash leaves a valid
// store of the completed shards and a flush costs the
// same however many examples the store holds. ResumeStore reopens it (Done
// reports finished ids; leftovers are removed; a store of version 1, whose
// manifest listed every example, is rewritten as version 2). CreateStore
// refuses a directory that already holds a store (ErrStoreExists). Merge
// joins stores dumped in parts (--shard i/n). OpenStore validates the
// manifest, every examples file and every shard header; LoadManifestHeader
// and ForEachExample read the header and the examples without holding them
// all. Store.ReadLayer and Store.ReadRows read one layer, or chosen rows, with
// ReadAt over just those bytes, converting F16 to float32. Extra fields for
// tools go in Manifest.Meta and Example.Meta.
//
// # Datasets and methods
//
// LoadDataset reads one layer at one position (last token, mean over the
// prompt, or every token) into a Dataset: a float32 Matrix (n × n_embd; a
// float64 copy would double the memory), labels (Positive, Negative,
// Unknown), groups and ids. Every Method fits a *Probe from a Dataset:
//
//	MeanDiff     w = μ₊ − μ₋ (Whiten: w = Σ_w⁻¹(μ₊ − μ₋), Marks & Tegmark)
//	Logistic     min (1/n)Σ log(1 + e^{−y(w·z+b)}) + ‖w‖²/(2Cn), z standardised, L-BFGS, C by grouped CV
//	LDA          w = Σ⁻¹(μ₊ − μ₋), b = −½w·(μ₊+μ₋) + log(π₊/π₋), Σ Ledoit–Wolf-shrunk pooled covariance
//	Contrast     w = mean over pairs of (a₊ − a₋), normalised (Anthropic's generic contrast-pair probe)
//	Mahalanobis  s(x) = (x − μ)ᵀΣ⁻¹(x − μ), μ, Σ (shrunk) from clean rows only
//	Spectral     s(x) = ((x − μ)·v)², v the top singular vector of the centred rows (Tran et al. 2018)
//
// Ledoit–Wolf shrinkage replaces a covariance S of n rows in p dimensions by
// (1 − δ)S + δ·m·I, m = tr S/p, with δ = min(b̄², d²)/d², d² = ‖S − mI‖²_F/p and
// b̄² = Σ_i ‖x_i x_iᵀ − S‖²_F/(n²p): invertible even when n < p.
//
// A Probe scores a row as Weights·z + Bias (linear) or
// Bias + Σ_k Coef_k (Components_k·z)² (quadratic), z = (x − Mean)/Scale, and
// fires when the score exceeds Threshold.
//
// # Evaluation and calibration
//
// AUROC is the Mann–Whitney statistic with midranks for ties, equal to the
// trapezoidal area under ROC; BootstrapAUROC adds a stratified percentile
// interval; TPRAtFPR, ROC and ConfusionAt give operating points.
// CalibrateThreshold (and Probe.Calibrate) picks the threshold whose false
// positive rate on clean validation rows is the largest not above a target
// (default 1%) and records the target, the achieved rate and the number of
// clean rows. GroupKFold never puts one group (prompt family or template) in
// both training and test folds; CrossValidate uses it to estimate a method's
// AUROC.
//
// # Probe files
//
// Probe.Save writes JSON (version, method, layer, point, position, model
// fingerprint and n_embd, normalisation, weights or quadratic terms, bias,
// threshold and calibration, training summary with CV AUROC), or, for a probe
// whose arrays hold more than 65,536 values (a quadratic probe at a real
// width), one safetensors file with that JSON document, less the arrays, in
// its metadata and the arrays as F64 and F32 tensors under a SHA-256; Load
// reads and validates either, exactly. Probe.CheckModel and Probe.CheckDataset return an
// error wrapping ErrModelMismatch when a probe meets another model, n_embd,
// layer or position.
//
// Programmer errors (mismatched lengths) panic with a "probe: " prefix;
// conditions that data or files can cause are returned as errors.
package probe
