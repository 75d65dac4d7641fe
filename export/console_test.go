package export

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kpath/kpath/correlate"
)

func waterfall(tr correlate.Trace) string {
	var b bytes.Buffer
	Waterfall(&b, tr)
	return b.String()
}

func checkWidth(t *testing.T, out string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if n := utf8.RuneCountInString(l); n > lineWidth {
			t.Errorf("line is %d columns wide:\n%s", n, l)
		}
	}
}

// nameColumn is the rune column where name starts on the line that has it.
func nameColumn(t *testing.T, out, name string) int {
	t.Helper()
	for _, l := range strings.Split(out, "\n")[1:] {
		if i := strings.Index(l, " "+name+" "); i >= 0 {
			return utf8.RuneCountInString(l[:i+1])
		}
	}
	t.Fatalf("no line names %q:\n%s", name, out)
	return 0
}

func TestWaterfall(t *testing.T) {
	out := waterfall(podTrace(1))
	t.Log("\n" + out)
	checkWidth(t, out)

	header := strings.SplitN(out, "\n", 2)[0]
	for _, want := range []string{"0102030405060708090a0b0c0d0e0f10", "POST pods", "12.0ms"} {
		if !strings.Contains(header, want) {
			t.Errorf("header %q lacks %q", header, want)
		}
	}
	for _, want := range []string{"key=/registry/pods/default/nginx", "rev=1234567890123", "ns=default", "name=nginx"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out, "incomplete") {
		t.Error("complete trace marked incomplete")
	}

	root, write, txn, watch := nameColumn(t, out, "POST pods"), nameColumn(t, out, "storage write"),
		nameColumn(t, out, "etcd txn"), nameColumn(t, out, "watch event")
	if write != root+2 || txn != root+4 || watch != root+2 {
		t.Errorf("indentation: root %d, storage write %d, etcd txn %d, watch event %d", root, write, txn, watch)
	}
	// Depth-first: the etcd txn comes right after its parent, before the watch.
	if i, j := strings.Index(out, "etcd txn"), strings.Index(out, "watch event"); i > j {
		t.Error("etcd txn printed after watch event")
	}
	for _, want := range []string{"apiserver/request", "apiserver/storage-write", "etcd/etcd-txn", "+3.00ms", "5.00ms", "400µs"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if n := strings.Count(out, "◀ slowest"); n != 1 {
		t.Fatalf("%d slowest marks, want 1", n)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "◀ slowest") && !strings.Contains(l, "etcd txn") {
			t.Errorf("the span with the most time of its own is etcd txn, marked: %s", l)
		}
	}
	// The root spans the whole trace: a full bar.
	if !strings.Contains(out, strings.Repeat("█", barW)) {
		t.Error("root bar is not full width")
	}
}

func TestWaterfallEdgeCases(t *testing.T) {
	long := strings.Repeat("x", 150)
	one := correlate.Trace{ID: tid(9), Spans: []correlate.Span{{SpanID: sid(1), Name: "lonely " + long, Start: t0, End: t0,
		Attributes: []correlate.Attribute{{Key: correlate.AttrKey, Value: "/registry/" + long}}}}}
	orphan := podTrace(2)
	orphan.Spans = orphan.Spans[1:] // parent of storage write is gone
	cycle := correlate.Trace{Spans: []correlate.Span{
		{SpanID: sid(1), Parent: sid(2), Name: "a", Start: t0, End: t0.Add(time.Second)},
		{SpanID: sid(2), Parent: sid(1), Name: "b", Start: t0, End: t0.Add(-time.Second)},
	}}
	for name, tc := range map[string]struct {
		tr   correlate.Trace
		want []string
	}{
		"empty":      {correlate.Trace{}, []string{"no spans", "[incomplete]"}},
		"one span":   {one, []string{"lonely", "[incomplete]", "0µs"}},
		"orphan":     {orphan, []string{"storage write", "etcd txn", "watch event"}},
		"cycle":      {cycle, []string{" a ", " b "}},
		"incomplete": {correlate.Trace{Spans: podTrace(3).Spans}, []string{"[incomplete]", "POST pods"}},
	} {
		t.Run(name, func(t *testing.T) {
			out := waterfall(tc.tr)
			t.Log("\n" + out)
			checkWidth(t, out)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q", w)
				}
			}
			if name == "one span" && strings.Contains(out, "slowest") {
				t.Error("a one-span trace needs no slowest mark")
			}
		})
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                         "0µs",
		-time.Second:              "0µs",
		999 * time.Microsecond:    "999µs",
		1500 * time.Microsecond:   "1.50ms",
		123456 * time.Microsecond: "123.5ms",
		2500 * time.Millisecond:   "2.50s",
		75 * time.Second:          "75.0s",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestConsoleExporter(t *testing.T) {
	var mu sync.Mutex
	var writes []string
	e := NewConsole(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		writes = append(writes, string(p))
		mu.Unlock()
		return len(p), nil
	}))
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() { e.Export(podTrace(byte(i))) })
	}
	wg.Wait()
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(writes) != 4 {
		t.Fatalf("%d writes, want one per trace", len(writes))
	}
	for _, w := range writes {
		if !strings.HasPrefix(w, "trace ") || strings.Count(w, "trace ") != 1 {
			t.Errorf("write is not one whole trace:\n%s", w)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
