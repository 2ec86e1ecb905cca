package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plots writes docs/img/bench-memory.png (server RSS per connection against
// the number of idle connections) and docs/img/bench-latency.png (p50 and
// p99 against the offered rate).
func plots(c config, all []*outcome) error {
	mem := plot.New()
	mem.Title.Text = "Server RSS per idle connection"
	mem.X.Label.Text = "idle connections"
	mem.Y.Label.Text = "KB per connection"
	lat := plot.New()
	lat.Title.Text = "Echo latency at a fixed offered rate (1,000 conns, 1 KiB)"
	lat.X.Label.Text = "offered msgs/s"
	lat.Y.Label.Text = "ms (p99 solid, p50 dashed)"
	lat.Y.Scale = plot.LogScale{}
	lat.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	var memMax, latMax float64
	for i, o := range all {
		var m, p50, p99 plotter.XYs
		for k, r := range o.Results {
			switch {
			case strings.HasPrefix(k, "hold-") && r.Server != nil && r.Alive > 0 && r.Server.RSSPerConn > 0:
				m = append(m, plotter.XY{X: float64(r.Alive), Y: r.Server.RSSPerConn / 1024})
			case strings.HasPrefix(k, "rate-") && r.Received > 0:
				x, _ := strconv.Atoi(strings.TrimPrefix(k, "rate-"))
				p50 = append(p50, plotter.XY{X: float64(x), Y: max(r.Latency.P50, 0.001)})
				p99 = append(p99, plotter.XY{X: float64(x), Y: max(r.Latency.P99, 0.001)})
			}
		}
		for _, xy := range []plotter.XYs{m, p50, p99} {
			sortXY(xy)
		}
		for _, p := range m {
			memMax = max(memMax, p.Y)
		}
		for _, p := range p99 {
			latMax = max(latMax, p.Y)
		}
		col := plotutil.Color(i)
		if len(m) > 0 {
			l, pts, err := plotter.NewLinePoints(m)
			if err != nil {
				return err
			}
			l.Color, pts.Color = col, col
			mem.Add(l, pts)
			mem.Legend.Add(o.Server, l, pts)
		}
		if len(p99) > 0 {
			l99, err := plotter.NewLine(p99)
			if err != nil {
				return err
			}
			l50, err := plotter.NewLine(p50)
			if err != nil {
				return err
			}
			l99.Color, l50.Color = col, col
			l50.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
			lat.Add(l99, l50)
			lat.Legend.Add(o.Server, l99)
		}
	}
	// Headroom above the lines for the legend.
	mem.Y.Min, mem.Y.Max = 0, memMax*1.5
	if latMax > 0 {
		lat.Y.Max = latMax * 20
	}
	mem.Legend.Top = true
	lat.Legend.Top = true
	lat.Legend.Left = true
	if err := mem.Save(8*vg.Inch, 5*vg.Inch, filepath.Join(c.img, "bench-memory.png")); err != nil {
		return fmt.Errorf("memory plot: %w", err)
	}
	if err := lat.Save(8*vg.Inch, 5*vg.Inch, filepath.Join(c.img, "bench-latency.png")); err != nil {
		return fmt.Errorf("latency plot: %w", err)
	}
	return nil
}

func sortXY(xy plotter.XYs) {
	for i := 1; i < len(xy); i++ {
		for j := i; j > 0 && xy[j].X < xy[j-1].X; j-- {
			xy[j], xy[j-1] = xy[j-1], xy[j]
		}
	}
}
