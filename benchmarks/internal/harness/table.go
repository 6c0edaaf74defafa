//go:build linux

package harness

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// WriteTable prints results as an aligned table, a blank line between
// shapes. Skipped engines show their reason; failed runs their first error.
func WriteTable(w io.Writer, results []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "engine\tdevice\trw\tbs\tqd\tjobs\tfiles\tIOPS\tMB/s\tp50 µs\tp99 µs\tp99.9 µs\tCPU µs/op\tmachine µs/op\tthreads\terrors\t×fio\t×pread\t")
	var prev string
	var notes []string
	for _, r := range results {
		key := shapeKey(r)
		if prev != "" && key != prev {
			fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t\t")
		}
		prev = key
		head := fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%d\t%d\t", r.Label()+optSuffix(r), dash(r.Device), r.RW, FormatSize(int64(r.BS)), r.QD, r.Jobs, max(r.Files, 1))
		if r.Skipped != "" {
			fmt.Fprintf(tw, "%sskipped\t\t\t\t\t\t\t\t\t\t\t\n", head)
			notes = append(notes, fmt.Sprintf("%s skipped: %s", r.Label(), r.Skipped))
			continue
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t\n", head,
			num(r.IOPS, 0), num(r.MBps, 1), num(r.LatP50, 1), num(r.LatP99, 1), num(r.LatP999, 1),
			num(r.CPUPerOp, 2), num(r.SysCPUPerOp, 2), count(r.Threads), r.Errors, ratio(r.VsFio), ratio(r.VsPread))
		if r.FirstError != "" {
			notes = append(notes, fmt.Sprintf("%s %s: %s", r.Label(), shapeKey(r), r.FirstError))
		}
		if r.Note != "" {
			notes = append(notes, fmt.Sprintf("%s: %s", r.Label(), r.Note))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, n := range notes {
		if !seen[n] {
			seen[n] = true
			fmt.Fprintln(w, "  "+n)
		}
	}
	return nil
}

func shapeKey(r *Result) string {
	return fmt.Sprintf("%s %s %s qd%d", dash(r.Device), r.RW, FormatSize(int64(r.BS)), r.QD) + jobsSuffix(r.Jobs) + filesSuffix(r.Files)
}

func count(n int) string {
	if n == 0 {
		return "-"
	}
	return strconv.Itoa(n)
}

func optSuffix(r *Result) string {
	if r.Options == "" {
		return ""
	}
	return " [" + r.Options + "]"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func num(v float64, prec int) string {
	if v == 0 {
		return "-"
	}
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if prec == 0 && v >= 10000 {
		// thousands separators for big counts
		var b strings.Builder
		for i, c := range s {
			if i > 0 && (len(s)-i)%3 == 0 {
				b.WriteByte(',')
			}
			b.WriteRune(c)
		}
		return b.String()
	}
	return s
}

func ratio(v float64) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
