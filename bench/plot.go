//go:build linux

package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var serverColors = map[string]color.RGBA{
	kindRelay:        {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	kindRelayUser:    {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	kindCoturn:       {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	kindCoturnDebian: {R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
}

// plotThroughput draws, for each TURN server, the delivered round-trip rate against the
// offered one: a line through the fixed ladder of rates (median over rounds), crosses on
// steps that most rounds failed, small circles for the bisection steps (which differ
// between rounds), a thin dashed line for what the generator managed to send, and the
// ideal y = x, so the knee where server and generator stop keeping up is visible.
func plotThroughput(path string, ladder []float64, res *results) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Relayed ChannelData over UDP, loopback, %d CPUs shared by server and generator", res.Machine.CPUs)
	if t := res.Options["gen_threads"]; t != "" && t != "1" {
		p.Title.Text += " (" + t + " generator threads)"
	}
	p.X.Label.Text = "offered round trips/s, thousands (4 relayed datagrams each)"
	p.Y.Label.Text = "delivered round trips/s, thousands"
	p.Add(plotter.NewGrid())
	// Top left: the lines run along the diagonal, so that corner stays empty.
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.XOffs = vg.Points(10)
	p.Legend.YOffs = -vg.Points(10)

	onLadder := map[float64]bool{}
	for _, x := range ladder {
		onLadder[x] = true
	}
	maxX := 0.0
	// One legend line each for what every server's lines share, in gray.
	var legendSent *plotter.Line
	var legendFailed, legendExtra *plotter.Scatter
	for _, k := range turnKinds {
		type agg struct {
			delivered, sent []float64
			passed, n       int
		}
		byRate := map[float64]*agg{}
		var extra plotter.XYs // bisection steps
		for _, r := range res.TURN[k] {
			for _, s := range r.Steps {
				if !onLadder[s.OfferedRTps] {
					extra = append(extra, plotter.XY{X: s.OfferedRTps / 1000, Y: s.DeliveredRTps / 1000})
					continue
				}
				a := byRate[s.OfferedRTps]
				if a == nil {
					a = &agg{}
					byRate[s.OfferedRTps] = a
				}
				a.delivered = append(a.delivered, s.DeliveredRTps)
				a.sent = append(a.sent, s.SentRTps)
				a.n++
				if s.Pass {
					a.passed++
				}
			}
		}
		if len(byRate) == 0 {
			continue
		}
		var delivered, sent, failed plotter.XYs
		for _, x := range ladder {
			a := byRate[x]
			if a == nil {
				continue
			}
			pt := plotter.XY{X: x / 1000, Y: median(a.delivered) / 1000}
			delivered = append(delivered, pt)
			sent = append(sent, plotter.XY{X: x / 1000, Y: median(a.sent) / 1000})
			if 2*a.passed < a.n || (2*a.passed == a.n && a.n > 0) {
				failed = append(failed, pt)
			}
			maxX = max(maxX, x/1000)
		}
		c := serverColors[k]
		line, points, err := plotter.NewLinePoints(delivered)
		if err != nil {
			return err
		}
		line.Color, line.Width = c, vg.Points(2)
		points.Color, points.Shape = c, draw.CircleGlyph{}
		p.Add(line, points)
		name := turnName(k, res)
		label := name
		if v := collect(res.TURN[k], func(r *turnRound) (float64, bool) { return r.MaxRTps, len(r.Steps) > 0 }); len(v) > 0 {
			label = fmt.Sprintf("%s: delivered; sustains %.0fk rt/s at < 0.1%% loss (median)", name, median(v)/1000)
		}
		p.Legend.Add(label, line, points)
		sl, err := plotter.NewLine(sent)
		if err != nil {
			return err
		}
		sl.Color, sl.Width = c, vg.Points(0.8)
		sl.Dashes = []vg.Length{vg.Points(3), vg.Points(2)}
		p.Add(sl)
		legendSent = sl
		if len(failed) > 0 {
			fs, err := plotter.NewScatter(failed)
			if err != nil {
				return err
			}
			fs.Color, fs.Shape, fs.Radius = c, draw.CrossGlyph{}, vg.Points(6)
			p.Add(fs)
			legendFailed = fs
		}
		if len(extra) > 0 {
			es, err := plotter.NewScatter(extra)
			if err != nil {
				return err
			}
			es.Color, es.Shape, es.Radius = c, draw.RingGlyph{}, vg.Points(2.5)
			p.Add(es)
			legendExtra = es
		}
	}
	gray := color.Gray{Y: 0x66}
	if legendSent != nil {
		l := *legendSent
		l.Color = gray
		p.Legend.Add("dashed: what the generator managed to offer", &l)
	}
	if legendFailed != nil {
		f := *legendFailed
		f.Color = gray
		p.Legend.Add("step failed in most rounds", &f)
	}
	if legendExtra != nil {
		e := *legendExtra
		e.Color = gray
		p.Legend.Add("bisection steps (each round)", &e)
	}
	ideal, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: maxX, Y: maxX}})
	if err != nil {
		return err
	}
	ideal.Color = color.Gray{Y: 0x99}
	ideal.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
	p.Add(ideal)
	p.Legend.Add("delivered = offered", ideal)
	p.X.Min, p.Y.Min = 0, 0

	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return p.Save(9*vg.Inch, 5.5*vg.Inch, path)
}
