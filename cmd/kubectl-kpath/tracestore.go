package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kpath/kpath/correlate"
)

// traceStore reads one trace by its ID from a trace store's query API:
// Jaeger's /api/v3/traces/{id}, which answers OTLP/JSON. Any store with
// that API works (docs/install.md says how to point explain at others).
type traceStore struct {
	base   string // e.g. http://jaeger-query.observability:16686
	client *http.Client
}

// otlpJSON is the part of an OTLP/JSON TracesData that a waterfall needs.
type otlpJSON struct {
	Result struct {
		ResourceSpans []struct {
			ScopeSpans []struct {
				Spans []struct {
					TraceID      string       `json:"traceId"`
					SpanID       string       `json:"spanId"`
					ParentSpanID string       `json:"parentSpanId"`
					Name         string       `json:"name"`
					Start        string       `json:"startTimeUnixNano"`
					End          string       `json:"endTimeUnixNano"`
					Attributes   []otlpJSONKV `json:"attributes"`
				} `json:"spans"`
			} `json:"scopeSpans"`
		} `json:"resourceSpans"`
	} `json:"result"`
}

type otlpJSONKV struct {
	Key   string `json:"key"`
	Value struct {
		StringValue *string      `json:"stringValue"`
		IntValue    *json.Number `json:"intValue"` // a string in OTLP/JSON, a number in some encoders
		BoolValue   *bool        `json:"boolValue"`
		DoubleValue *float64     `json:"doubleValue"`
	} `json:"value"`
}

// get returns the trace, or found=false when the store has no such trace
// (not yet exported, or aged out).
func (s traceStore) get(ctx context.Context, id correlate.TraceID) (t correlate.Trace, found bool, err error) {
	u := fmt.Sprintf("%s/api/v3/traces/%x", strings.TrimRight(s.base, "/"), id[:])
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return t, false, fmt.Errorf("trace store: %w", err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return t, false, fmt.Errorf("trace store: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return t, false, fmt.Errorf("trace store: GET %s: %w", u, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return t, false, nil
	case resp.StatusCode != http.StatusOK:
		return t, false, fmt.Errorf("trace store: GET %s: %s: %.200s", u, resp.Status, body)
	}
	var doc otlpJSON
	if err := json.Unmarshal(body, &doc); err != nil {
		return t, false, fmt.Errorf("trace store: GET %s: not OTLP/JSON: %w", u, err)
	}
	t = correlate.Trace{ID: id, Complete: true}
	for _, rs := range doc.Result.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			for _, js := range ss.Spans {
				sp := correlate.Span{TraceID: id, Name: js.Name, Start: unixNano(js.Start), End: unixNano(js.End)}
				copy(sp.SpanID[:], otlpID(js.SpanID))
				copy(sp.Parent[:], otlpID(js.ParentSpanID))
				for _, kv := range js.Attributes {
					sp.Attributes = append(sp.Attributes, correlate.Attribute{Key: kv.Key, Value: kv.value()})
				}
				if c, ok := sp.Attr(correlate.AttrComplete).(bool); ok && sp.Parent == (correlate.SpanID{}) {
					t.Complete = c
				}
				t.Spans = append(t.Spans, sp)
			}
		}
	}
	if len(t.Spans) == 0 {
		return t, false, nil
	}
	return t, true, nil
}

func (kv otlpJSONKV) value() any {
	v := kv.Value
	switch {
	case v.StringValue != nil:
		return *v.StringValue
	case v.IntValue != nil:
		if n, err := v.IntValue.Int64(); err == nil {
			return n
		}
		return v.IntValue.String()
	case v.BoolValue != nil:
		return *v.BoolValue
	case v.DoubleValue != nil:
		return *v.DoubleValue
	}
	return nil
}

// otlpID decodes an ID as OTLP/JSON writes it (hex), or as protobuf's JSON
// mapping of bytes would (base64).
func otlpID(s string) []byte {
	if b, err := hex.DecodeString(s); err == nil {
		return b
	}
	b, _ := base64.StdEncoding.DecodeString(s)
	return b
}

func unixNano(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
