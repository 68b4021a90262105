package bench

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

var palette = []color.Color{
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
}

// Chart draws lockers answering (old or new build) over time since each
// scenario's command started, one line per scenario, as a PNG.
func Chart(rep *Report, path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("lockers answering during an update (N=%d, %d cores)", rep.N, rep.Machine.Cores)
	p.X.Label.Text = "seconds since the update command started"
	p.Y.Label.Text = "lockers answering /healthz"
	// Head room above the lines for the legend.
	p.Y.Min, p.Y.Max = 0, float64(rep.N)*1.5
	p.Legend.Top = true
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	i := 0
	for _, f := range rep.Scenarios {
		if len(f.Healthy) == 0 {
			continue
		}
		pts := make(plotter.XYs, len(f.Healthy))
		for k, v := range f.Healthy {
			pts[k].X = float64(k) / 10
			pts[k].Y = float64(v)
		}
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		if i%2 == 1 {
			l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		}
		p.Add(l)
		p.Legend.Add(f.Title, l)
		i++
	}
	if i == 0 {
		return nil
	}
	return p.Save(10*vg.Inch, 5.5*vg.Inch, path)
}
