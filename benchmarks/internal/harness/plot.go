//go:build linux

package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// WritePlot draws IOPS (left) and p99 latency (right) by queue depth, one
// line per engine and workload, to path (.png or .svg).
func WritePlot(path string, results []*Result) error {
	ext := strings.ToLower(filepath.Ext(path))
	if ext != ".png" && ext != ".svg" {
		return fmt.Errorf("-plot %s: want a .png or .svg file", path)
	}
	type series struct {
		name string
		iops plotter.XYs
		p99  plotter.XYs
	}
	byName := map[string]*series{}
	workloads := map[string]bool{}
	for _, r := range results {
		if r.Skipped != "" || r.IOPS == 0 {
			continue
		}
		workloads[fmt.Sprintf("%s %s %s", dash(r.Device), r.RW, FormatSize(int64(r.BS)))+jobsSuffix(r.Jobs)+filesSuffix(r.Files)] = true
	}
	for _, r := range results {
		if r.Skipped != "" || r.IOPS == 0 {
			continue
		}
		name := r.Label() + optSuffix(r)
		if len(workloads) > 1 {
			name += fmt.Sprintf(" (%s %s %s)", dash(r.Device), r.RW, FormatSize(int64(r.BS))) + jobsSuffix(r.Jobs) + filesSuffix(r.Files)
		}
		s := byName[name]
		if s == nil {
			s = &series{name: name}
			byName[name] = s
		}
		s.iops = append(s.iops, plotter.XY{X: float64(r.QD), Y: r.IOPS})
		s.p99 = append(s.p99, plotter.XY{X: float64(r.QD), Y: r.LatP99})
	}
	if len(byName) == 0 {
		return fmt.Errorf("-plot: no results to plot")
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)

	title := "diobench"
	if len(workloads) == 1 {
		for w := range workloads {
			title += ": " + w
		}
	}
	left, right := plot.New(), plot.New()
	left.Title.Text, right.Title.Text = title+" — IOPS", title+" — p99 latency"
	left.X.Label.Text, right.X.Label.Text = "queue depth", "queue depth"
	left.Y.Label.Text, right.Y.Label.Text = "IOPS", "p99 latency (µs)"
	for _, p := range []*plot.Plot{left, right} {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
		p.Legend.Left = true
	}
	right.Y.Scale = plot.LogScale{}
	right.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	for i, n := range names {
		s := byName[n]
		sort.Slice(s.iops, func(a, b int) bool { return s.iops[a].X < s.iops[b].X })
		sort.Slice(s.p99, func(a, b int) bool { return s.p99[a].X < s.p99[b].X })
		for _, pair := range []struct {
			p   *plot.Plot
			xys plotter.XYs
		}{{left, s.iops}, {right, s.p99}} {
			l, pts, err := plotter.NewLinePoints(pair.xys)
			if err != nil {
				return err
			}
			l.Color = plotutil.Color(i)
			l.Dashes = plotutil.Dashes(i / 7)
			pts.Color = plotutil.Color(i)
			pts.Shape = plotutil.Shape(i)
			pair.p.Add(l, pts)
			if pair.p == left {
				pair.p.Legend.Add(n, l, pts)
			}
		}
	}

	w, h := 28*vg.Centimeter, 11*vg.Centimeter
	var c vg.CanvasWriterTo
	var dc draw.Canvas
	if ext == ".svg" {
		sc := vgsvg.New(w, h)
		c, dc = sc, draw.New(sc)
	} else {
		ic := vgimg.New(w, h)
		c, dc = vgimg.PngCanvas{Canvas: ic}, draw.New(ic)
	}
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Centimeter, PadTop: vg.Millimeter * 3,
		PadBottom: vg.Millimeter * 3, PadLeft: vg.Millimeter * 3, PadRight: vg.Millimeter * 3}
	cs := plot.Align([][]*plot.Plot{{left, right}}, tiles, dc)
	left.Draw(cs[0][0])
	right.Draw(cs[0][1])

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
