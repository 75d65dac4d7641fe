package export

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/kpath/kpath/correlate"
)

func decodeLine(t *testing.T, line string) map[string]any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(line))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	return m
}

func TestJSONLFields(t *testing.T) {
	var buf bytes.Buffer
	e := NewJSONL(&buf)
	e.Export(podTrace(1))
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want 4:\n%s", len(lines), buf.String())
	}

	root := decodeLine(t, lines[0])
	if got, want := root["traceId"], "0102030405060708090a0b0c0d0e0f10"; got != want {
		t.Errorf("traceId = %v, want %v", got, want)
	}
	if got, want := root["spanId"], "1011121314151617"; got != want {
		t.Errorf("spanId = %v, want %v", got, want)
	}
	if _, ok := root["parentSpanId"]; ok {
		t.Errorf("root has parentSpanId: %s", lines[0])
	}
	if _, ok := root["kind"]; ok {
		t.Errorf("kind present: %s", lines[0])
	}
	if got, want := root["name"], "POST pods"; got != want {
		t.Errorf("name = %v, want %v", got, want)
	}
	if got, want := root["startTimeUnixNano"], "1741964966535897932"; got != want {
		t.Errorf("startTimeUnixNano = %#v, want string %v", got, want)
	}
	if got, want := root["endTimeUnixNano"], "1741964966547897932"; got != want {
		t.Errorf("endTimeUnixNano = %#v, want string %v", got, want)
	}
	attrs, ok := root["attributes"].(map[string]any)
	if !ok {
		t.Fatalf("attributes not a flat object: %s", lines[0])
	}
	if got := attrs["kpath.component"]; got != "kube-apiserver" {
		t.Errorf("kpath.component = %#v", got)
	}
	if got := attrs["kpath.revision"]; got != json.Number("1234567890123") {
		t.Errorf("kpath.revision = %#v, want JSON number 1234567890123", got)
	}
	if got := attrs["kpath.key"]; got != "/registry/pods/default/nginx" {
		t.Errorf("kpath.key = %#v", got)
	}

	child := decodeLine(t, lines[2])
	if got, want := child["parentSpanId"], "2021222324252627"; got != want {
		t.Errorf("parentSpanId = %v, want %v", got, want)
	}
	if got := child["attributes"].(map[string]any)["kpath.succeeded"]; got != true {
		t.Errorf("kpath.succeeded = %#v, want JSON true", got)
	}
	if _, ok := child["links"]; ok {
		t.Errorf("a span without links has a links field: %s", lines[2])
	}

	// Links: OTLP/JSON's names, attributes flat.
	tr := podTrace(1)
	tr.Spans = tr.Spans[:1]
	tr.Spans[0].Links = []correlate.Link{{TraceID: tid(3), SpanID: sid(4), Attributes: []correlate.Attribute{{Key: correlate.AttrLink, Value: "creator"}}}}
	buf.Reset()
	e = NewJSONL(&buf)
	e.Export(tr)
	e.Close(context.Background())
	links, _ := decodeLine(t, buf.String())["links"].([]any)
	if len(links) != 1 {
		t.Fatalf("links = %v: %s", links, buf.String())
	}
	l := links[0].(map[string]any)
	if wt, ws := tid(3), sid(4); l["traceId"] != hex.EncodeToString(wt[:]) || l["spanId"] != hex.EncodeToString(ws[:]) || l["attributes"].(map[string]any)["kpath.link"] != "creator" {
		t.Errorf("link %v", l)
	}
}

// lineWriter fails the test unless every Write is exactly one line.
type lineWriter struct {
	t     *testing.T
	mu    sync.Mutex
	lines []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	if bytes.Count(p, []byte("\n")) != 1 || p[len(p)-1] != '\n' {
		w.t.Errorf("write is not exactly one line: %q", p)
	}
	w.mu.Lock()
	w.lines = append(w.lines, string(p))
	w.mu.Unlock()
	return len(p), nil
}

func TestJSONLConcurrentOneWritePerLine(t *testing.T) {
	w := &lineWriter{t: t}
	e := NewJSONL(w)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for range 50 {
				e.Export(podTrace(byte(g)))
			}
		})
	}
	wg.Wait()
	if len(w.lines) != 8*50*4 {
		t.Fatalf("got %d lines, want %d", len(w.lines), 8*50*4)
	}
	for _, l := range w.lines {
		decodeLine(t, l)
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	w.n++
	return 0, errors.New("disk full")
}

func TestJSONLWriteErrorStopsAndIsReported(t *testing.T) {
	w := &failWriter{}
	e := NewJSONL(w)
	e.Export(podTrace(1))
	e.Export(podTrace(2))
	if w.n != 1 {
		t.Errorf("wrote %d times after an error, want 1", w.n)
	}
	if err := e.Close(context.Background()); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Close = %v, want the write error", err)
	}
}

func TestAttrValueNormalises(t *testing.T) {
	for in, want := range map[any]any{
		"s": "s", int64(-1): int64(-1), true: true, 7: int64(7), uint32(8): int64(8),
		uint64(1 << 63): "9223372036854775808", 1.5: 1.5, float32(2): 2.0,
	} {
		if got := attrValue(in); got != want {
			t.Errorf("attrValue(%#v) = %#v, want %#v", in, got, want)
		}
	}
	var buf bytes.Buffer
	e := NewJSONL(&buf)
	sp := podTrace(1).Spans[0]
	sp.Attributes = []correlate.Attribute{{Key: "nan", Value: math.NaN()}, {Key: "nil", Value: nil}}
	e.Export(correlate.Trace{Spans: []correlate.Span{sp}})
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := decodeLine(t, buf.String())["attributes"]; !reflect.DeepEqual(got, map[string]any{"nan": "NaN"}) {
		t.Errorf("attributes = %v", got)
	}
}
