package export

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"time"

	"github.com/kpath/kpath/correlate"
)

// Exporter sends finished traces somewhere. Export must not block the caller
// for long: implementations that do network I/O queue and drop (counted) when
// full. Export takes ownership of the trace: the caller must not modify it
// afterwards.
type Exporter interface {
	Export(t correlate.Trace)
	// Close flushes what is pending, bounded by ctx, and releases resources.
	Close(ctx context.Context) error
}

// JSONSpan is one line of the JSONL output, a stable public contract. Field
// names follow OTLP/JSON; attributes are flattened to a JSON object whose
// values are strings, numbers (int64 attributes) or booleans.
type JSONSpan struct {
	TraceID           string         `json:"traceId"`                // 32 lowercase hex digits
	SpanID            string         `json:"spanId"`                 // 16 lowercase hex digits
	ParentSpanID      string         `json:"parentSpanId,omitempty"` // absent for the root
	Name              string         `json:"name"`
	StartTimeUnixNano string         `json:"startTimeUnixNano"` // decimal, as OTLP/JSON writes fixed64
	EndTimeUnixNano   string         `json:"endTimeUnixNano"`
	Attributes        map[string]any `json:"attributes"`
	Links             []JSONLink     `json:"links,omitempty"` // absent when the span has none
}

// JSONLink is a span link in the JSONL output, attributes flattened too.
type JSONLink struct {
	TraceID    string         `json:"traceId"`
	SpanID     string         `json:"spanId"`
	Attributes map[string]any `json:"attributes,omitempty"`
}

// NewJSONSpan converts s to its JSONL form.
func NewJSONSpan(s *correlate.Span) JSONSpan {
	j := JSONSpan{
		TraceID:           hex.EncodeToString(s.TraceID[:]),
		SpanID:            hex.EncodeToString(s.SpanID[:]),
		Name:              s.Name,
		StartTimeUnixNano: strconv.FormatUint(unixNano(s.Start), 10),
		EndTimeUnixNano:   strconv.FormatUint(unixNano(s.End), 10),
		Attributes:        make(map[string]any, len(s.Attributes)),
	}
	if s.Parent != (correlate.SpanID{}) {
		j.ParentSpanID = hex.EncodeToString(s.Parent[:])
	}
	for _, a := range s.Attributes {
		if a.Value != nil {
			j.Attributes[a.Key] = attrValue(a.Value)
		}
	}
	for _, l := range s.Links {
		jl := JSONLink{TraceID: hex.EncodeToString(l.TraceID[:]), SpanID: hex.EncodeToString(l.SpanID[:])}
		if len(l.Attributes) > 0 {
			jl.Attributes = make(map[string]any, len(l.Attributes))
			for _, a := range l.Attributes {
				if a.Value != nil {
					jl.Attributes[a.Key] = attrValue(a.Value)
				}
			}
		}
		j.Links = append(j.Links, jl)
	}
	return j
}

// NewJSONL writes one JSON object per span, one line per Write call, so
// concurrent writers to the same file never interleave within a line. Writes
// are synchronous: w should be a local file or pipe. The first write error
// stops output and is returned by Close.
func NewJSONL(w io.Writer) Exporter { return &jsonl{w: w} }

type jsonl struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
	err error
}

func (e *jsonl) Export(t correlate.Trace) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range t.Spans {
		if e.err != nil {
			return
		}
		e.buf.Reset()
		enc := json.NewEncoder(&e.buf)
		enc.SetEscapeHTML(false) // keys and paths stay greppable
		if err := enc.Encode(NewJSONSpan(&t.Spans[i])); err != nil {
			e.err = fmt.Errorf("jsonl: encode span: %w", err)
			return
		}
		if _, err := e.w.Write(e.buf.Bytes()); err != nil {
			e.err = fmt.Errorf("jsonl: write: %w", err)
		}
	}
}

func (e *jsonl) Close(context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// unixNano maps the zero time to 0 rather than a negative number that would
// wrap around as an unsigned OTLP timestamp.
func unixNano(t time.Time) uint64 {
	if t.IsZero() || t.Before(time.Unix(0, 0)) {
		return 0
	}
	return uint64(t.UnixNano())
}

// attrValue normalises an attribute value to string, int64, bool or float64;
// the contract is string/int64/bool, but a stray int must not vanish.
func attrValue(v any) any {
	switch v := v.(type) {
	case string, int64, bool:
		return v
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return strconv.FormatFloat(v, 'g', -1, 64) // JSON has no NaN
		}
		return v
	case int:
		return int64(v)
	case int32:
		return int64(v)
	case uint32:
		return int64(v)
	case uint64:
		if v <= 1<<63-1 {
			return int64(v)
		}
		return strconv.FormatUint(v, 10)
	case float32:
		return attrValue(float64(v))
	case fmt.Stringer:
		return v.String()
	default:
		return fmt.Sprint(v)
	}
}
