package export

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/kpath/kpath/correlate"
)

// Column widths, chosen so a span line with its slowest marker fits in 100
// columns: offset, duration, name, component/stage, bar, marker.
const (
	lineWidth = 100
	offsetW   = 8
	durW      = 7
	nameW     = 21
	whereW    = 23
	barW      = 27
	slowMark  = " ◀ slowest"
)

// NewConsole prints each trace as a waterfall (see Waterfall), one Write per
// trace so concurrent traces never interleave. Writes are synchronous: w
// should be a terminal or local file. The first write error stops output and
// is returned by Close.
func NewConsole(w io.Writer) Exporter { return &console{w: w} }

type console struct {
	mu  sync.Mutex
	w   io.Writer
	err error
}

func (c *console) Export(t correlate.Trace) {
	var b bytes.Buffer
	Waterfall(&b, t)
	b.WriteByte('\n')
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	if _, err := c.w.Write(b.Bytes()); err != nil {
		c.err = fmt.Errorf("console: write: %w", err)
	}
}

func (c *console) Close(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Waterfall prints t for a human: a header (trace id, root span, object,
// total duration) and one line per span in tree order, indented by depth,
// with its offset from the trace start, duration, component/stage and a bar
// on the trace's time scale. The span with the most time of its own (its
// duration less its children's) is marked slowest, as that is where to
// look: a parent that only waits on its children is not. Write errors are
// ignored.
func Waterfall(w io.Writer, t correlate.Trace) {
	var b strings.Builder
	defer func() { io.WriteString(w, b.String()) }()

	rows := treeOrder(t.Spans)
	if len(rows) == 0 {
		fmt.Fprintf(&b, "trace %s: no spans%s\n", hex.EncodeToString(t.ID[:]), incompleteMark(t))
		return
	}
	start, end := rows[0].span.Start, rows[0].span.End
	for _, r := range rows {
		start = minTime(start, r.span.Start)
		end = maxTime(maxTime(end, r.span.Start), r.span.End)
	}
	total := end.Sub(start)

	writeHeader(&b, t, rows, total)

	slowest := -1
	if len(rows) > 1 {
		var most time.Duration
		for i := range rows {
			if d := selfTime(rows, i); slowest < 0 || d > most {
				slowest, most = i, d
			}
		}
	}
	for i, r := range rows {
		s := r.span
		name := strings.Repeat("  ", r.depth) + s.Name
		mark := ""
		if i == slowest {
			mark = slowMark
		}
		fmt.Fprintf(&b, "%*s %*s %s %s %s%s\n",
			offsetW, "+"+human(s.Start.Sub(start)), durW, human(spanDur(s)),
			fit(name, nameW), fit(where(s), whereW), bar(s.Start.Sub(start), spanDur(s), total), mark)
	}
}

func writeHeader(b *strings.Builder, t correlate.Trace, rows []row, total time.Duration) {
	tokens := []string{"trace " + hex.EncodeToString(t.ID[:]), rows[0].span.Name, human(total)}
	for _, f := range []struct{ label, key string }{
		{"key", correlate.AttrKey},
		{"rev", correlate.AttrRevision},
		{"ns", correlate.AttrNamespace},
		{"name", correlate.AttrPodName},
	} {
		for _, r := range rows {
			if v := r.span.Attr(f.key); v != nil {
				tokens = append(tokens, fmt.Sprintf("%s=%v", f.label, v))
				break
			}
		}
	}
	if m := incompleteMark(t); m != "" {
		tokens = append(tokens, strings.TrimSpace(m))
	}
	// Wrap rather than truncate: the key is what people search for.
	const indent = "    "
	width := 0
	for i, tok := range tokens {
		n := len([]rune(tok))
		switch {
		case i == 0:
		case width+2+n <= lineWidth:
			b.WriteString("  ")
			width += 2
		default:
			b.WriteString("\n" + indent)
			width = len(indent)
			tok = truncate(tok, lineWidth-len(indent))
			n = len([]rune(tok))
		}
		b.WriteString(tok)
		width += n
	}
	b.WriteByte('\n')
}

func incompleteMark(t correlate.Trace) string {
	if t.Complete {
		return ""
	}
	return " [incomplete]"
}

type row struct {
	span  *correlate.Span
	depth int
}

// treeOrder walks spans depth-first, children by start time. Spans whose
// parent is missing become extra roots, and spans caught in a parent cycle are
// appended at depth 0, so every span is printed exactly once.
func treeOrder(spans []correlate.Span) []row {
	byStart := make([]int, len(spans))
	for i := range byStart {
		byStart[i] = i
	}
	slices.SortStableFunc(byStart, func(a, b int) int { return spans[a].Start.Compare(spans[b].Start) })

	present := make(map[correlate.SpanID]bool, len(spans))
	for i := range spans {
		present[spans[i].SpanID] = true
	}
	children := map[correlate.SpanID][]int{}
	var roots []int
	for _, i := range byStart {
		s := &spans[i]
		if p := s.Parent; p != (correlate.SpanID{}) && p != s.SpanID && present[p] {
			children[p] = append(children[p], i)
		} else {
			roots = append(roots, i)
		}
	}

	rows := make([]row, 0, len(spans))
	seen := make([]bool, len(spans))
	var walk func(i, depth int)
	walk = func(i, depth int) {
		if seen[i] {
			return
		}
		seen[i] = true
		kids := children[spans[i].SpanID]
		rows = append(rows, row{span: &spans[i], depth: depth})
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	for _, i := range roots {
		walk(i, 0)
	}
	for _, i := range byStart {
		walk(i, 0)
	}
	return rows
}

// where is component/stage, without the "kube-" every control-plane
// component shares, to fit the column.
func where(s *correlate.Span) string {
	var parts []string
	if v := s.Attr(correlate.AttrComponent); v != nil {
		parts = append(parts, strings.TrimPrefix(fmt.Sprint(v), "kube-"))
	}
	if v := s.Attr(correlate.AttrStage); v != nil {
		parts = append(parts, fmt.Sprint(v))
	}
	return strings.Join(parts, "/")
}

// bar draws the span's extent on a barW-wide scale of the whole trace; even an
// instant span gets one cell so it stays visible.
func bar(off, dur, total time.Duration) string {
	from, to := 0, 1
	if total > 0 {
		scale := float64(barW) / float64(total)
		from = min(int(float64(off)*scale), barW-1)
		to = max(int(math.Ceil(float64(off+dur)*scale)), from+1)
		to = min(to, barW)
	}
	return strings.Repeat("·", from) + strings.Repeat("█", to-from) + strings.Repeat("·", barW-to)
}

// fit pads s to n columns, truncating with an ellipsis.
func fit(s string, n int) string {
	s = truncate(s, n)
	return s + strings.Repeat(" ", n-utf8.RuneCountInString(s))
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// human formats d in µs, ms or s with about three significant digits.
func human(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", max(d, 0).Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	default:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
}

func spanDur(s *correlate.Span) time.Duration { return max(s.End.Sub(s.Start), 0) }

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// selfTime is row i's duration less that of its children (the rows after it
// one level deeper, up to the next row at its depth or above).
func selfTime(rows []row, i int) time.Duration {
	d := spanDur(rows[i].span)
	for j := i + 1; j < len(rows) && rows[j].depth > rows[i].depth; j++ {
		if rows[j].depth == rows[i].depth+1 {
			d -= spanDur(rows[j].span)
		}
	}
	return max(d, 0)
}
