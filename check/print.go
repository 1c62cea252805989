package check

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"
)

// printer writes the report as it grows; a nil writer prints nothing.
type printer struct{ w io.Writer }

func (p *printer) target(url string) {
	if p.w != nil {
		fmt.Fprintln(p.w, url)
	}
}

func (p *printer) step(s Step) {
	if p.w != nil {
		fmt.Fprint(p.w, formatStep(s))
	}
}

func (p *printer) verdict(ok bool) {
	if p.w != nil {
		fmt.Fprintln(p.w, verdict(ok))
	}
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

// formatStep is one line: status, name, duration, detail.
//
//	ok    Allocate              4.0 ms   relayed address 203.0.113.10:50123 (lifetime 600 s)
func formatStep(s Step) string {
	status := "ok"
	if !s.OK {
		status = "FAIL"
	}
	line := fmt.Sprintf("  %-6s%-19s%6.1f ms   %s", status, s.Name, float64(s.Duration)/float64(time.Millisecond), s.Detail)
	return strings.TrimRight(line, " ") + "\n"
}

// Print writes the report as relay check prints it: each URL, its steps, and PASS or FAIL.
func (r Report) Print(w io.Writer) error {
	var b bytes.Buffer
	p := &printer{w: &b}
	for _, t := range r.Targets {
		p.target(t.URL)
		for _, s := range t.Steps {
			p.step(s)
		}
	}
	p.verdict(r.OK())
	_, err := w.Write(b.Bytes())
	return err
}

// String is the printed report.
func (r Report) String() string {
	var b strings.Builder
	_ = r.Print(&b)
	return b.String()
}
