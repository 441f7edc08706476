package bench

import (
	"fmt"
	"io"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WriteChart draws the throughput figures as a PNG: one row per server,
// calls/s on the left and p99 latency on the right, each a bar per system
// grouped by concurrency, so that a glance shows where each system falls
// off as calls pile up.
func (rep *Report) WriteChart(w io.Writer) error {
	if len(rep.Servers) == 0 {
		return fmt.Errorf("chart: no results")
	}
	metrics := []struct {
		title string
		value func(*Throughput) float64
	}{
		{"calls/s", func(t *Throughput) float64 { return t.CallsPerSec }},
		{"p99 latency (ms)", func(t *Throughput) float64 { return t.P99Ms }},
	}
	plots := make([][]*plot.Plot, len(rep.Servers))
	for i, s := range rep.Servers {
		for _, m := range metrics {
			p, err := barPlot(s, m.title, m.value)
			if err != nil {
				return fmt.Errorf("chart %s %s: %w", s.Server, m.title, err)
			}
			plots[i] = append(plots[i], p)
		}
	}
	img := vgimg.New(vg.Points(1100), vg.Points(float64(380*len(rep.Servers))))
	dc := draw.New(img)
	tiles := draw.Tiles{
		Rows: len(plots), Cols: len(metrics),
		PadX: vg.Millimeter * 6, PadY: vg.Millimeter * 6,
		PadTop: vg.Millimeter * 3, PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3,
	}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		for j, p := range plots[i] {
			p.Draw(canvases[i][j])
		}
	}
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// barPlot is one metric of one server: a group of bars per concurrency,
// a bar per system.
func barPlot(s *ServerResult, title string, value func(*Throughput) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = s.Server + ": " + title
	p.Y.Label.Text = title
	// The legend sits top left, above the bars: the axis goes up to
	// half again the highest bar.
	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.XOffs = vg.Millimeter * 2
	p.Y.Min = 0
	labels := make([]string, len(Concurrencies))
	for i, c := range Concurrencies {
		labels[i] = "c=" + strconv.Itoa(c)
	}
	p.NominalX(labels...)
	const width = 14
	n := len(s.Systems)
	highest := 0.0
	for i, r := range s.Systems {
		vs := make(plotter.Values, len(Concurrencies))
		for j, c := range Concurrencies {
			if t := r.At(c); t != nil {
				vs[j] = value(t)
				highest = max(highest, vs[j])
			}
		}
		bars, err := plotter.NewBarChart(vs, vg.Points(width))
		if err != nil {
			return nil, err
		}
		bars.LineStyle.Width = 0
		bars.Color = plotutil.Color(i)
		bars.Offset = vg.Points(width * (float64(i) - float64(n-1)/2))
		p.Add(bars)
		p.Legend.Add(r.System, bars)
	}
	p.Add(plotter.NewGrid())
	if highest > 0 {
		p.Y.Max = highest * 1.5
	}
	return p, nil
}
