package export

import (
	"maps"
	"math"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/kpath/kpath/correlate"
)

// The OTLP trace protobuf, written straight from correlate.Span: every span
// of every write goes through here, and building the generated messages
// first and marshalling them through reflection was a third of the agent's
// CPU. Field numbers are opentelemetry/proto/trace/v1/trace.proto and
// common/v1/common.proto; otlpwire_test.go decodes the output with the
// generated code.
const (
	fRequestResourceSpans = 1 // ExportTraceServiceRequest.resource_spans

	fResourceSpansResource   = 1
	fResourceSpansScopeSpans = 2

	fScopeSpansScope = 1
	fScopeSpansSpans = 2

	fScopeName    = 1
	fScopeVersion = 2

	fResourceAttributes = 1

	fSpanTraceID      = 1
	fSpanSpanID       = 2
	fSpanParentSpanID = 4
	fSpanName         = 5
	fSpanKind         = 6
	fSpanStart        = 7
	fSpanEnd          = 8
	fSpanAttributes   = 9
	fSpanLinks        = 13

	fLinkTraceID    = 1
	fLinkSpanID     = 2
	fLinkAttributes = 4

	fKeyValueKey   = 1
	fKeyValueValue = 2

	fAnyString = 1
	fAnyBool   = 2
	fAnyInt    = 3
	fAnyDouble = 4

	fResponsePartialSuccess = 1 // ExportTraceServiceResponse.partial_success
	fPartialRejectedSpans   = 1
	fPartialErrorMessage    = 2

	spanKindInternal = 1
)

// appendSpan appends s as a length-delimited Span field of ScopeSpans.
func appendSpan(b []byte, s *correlate.Span) []byte {
	b, at := openLen(b, fScopeSpansSpans)
	b = appendBytesField(b, fSpanTraceID, s.TraceID[:])
	b = appendBytesField(b, fSpanSpanID, s.SpanID[:])
	if s.Parent != (correlate.SpanID{}) {
		b = appendBytesField(b, fSpanParentSpanID, s.Parent[:])
	}
	b = appendStringField(b, fSpanName, s.Name)
	b = appendTag(b, fSpanKind, protowire.VarintType)
	b = appendVarint(b, spanKindInternal)
	b = appendTag(b, fSpanStart, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, unixNano(s.Start))
	b = appendTag(b, fSpanEnd, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, unixNano(s.End))
	for i := range s.Attributes {
		b = appendAttribute(b, fSpanAttributes, &s.Attributes[i])
	}
	for i := range s.Links {
		l := &s.Links[i]
		var lat int
		b, lat = openLen(b, fSpanLinks)
		b = appendBytesField(b, fLinkTraceID, l.TraceID[:])
		b = appendBytesField(b, fLinkSpanID, l.SpanID[:])
		for j := range l.Attributes {
			b = appendAttribute(b, fLinkAttributes, &l.Attributes[j])
		}
		b = closeLen(b, lat)
	}
	return closeLen(b, at)
}

// openLen appends a length-delimited field's tag and one byte for its
// length, which closeLen fills in once the body is written after it:
// the body is written once, not sized first (a walk of every attribute
// twice, per span of every write).
func openLen(b []byte, field protowire.Number) ([]byte, int) {
	b = appendTag(b, field, protowire.BytesType)
	b = append(b, 0)
	return b, len(b)
}

// closeLen writes the length of the body that began at at. A body of 128
// bytes or more needs a longer varint than the byte kept for it: the body
// moves up to make room (a span's few hundred bytes; attributes fit).
func closeLen(b []byte, at int) []byte {
	n := len(b) - at
	if n < 0x80 {
		b[at-1] = byte(n)
		return b
	}
	k := protowire.SizeVarint(uint64(n))
	b = append(b, make([]byte, k-1)...)
	copy(b[at-1+k:], b[at:at+n])
	protowire.AppendVarint(b[:at-1], uint64(n))
	return b
}

// appendAttribute appends a as a KeyValue field; a nil value is left out, as
// an attribute nobody set.
func appendAttribute(b []byte, field protowire.Number, a *correlate.Attribute) []byte {
	if a.Value == nil {
		return b
	}
	v := attrValue(a.Value)
	b, at := openLen(b, field)
	b = appendStringField(b, fKeyValueKey, a.Key)
	b = appendTag(b, fKeyValueValue, protowire.BytesType)
	b = appendVarint(b, uint64(anyValueSize(v)))
	switch x := v.(type) {
	case int64:
		b = appendTag(b, fAnyInt, protowire.VarintType)
		b = appendVarint(b, uint64(x))
	case bool:
		b = appendTag(b, fAnyBool, protowire.VarintType)
		b = appendVarint(b, protowire.EncodeBool(x))
	case float64:
		b = appendTag(b, fAnyDouble, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(x))
	case string:
		b = appendStringField(b, fAnyString, x)
	}
	return closeLen(b, at)
}

// anyValueSize takes what attrValue returns: string, int64, bool or float64.
func anyValueSize(v any) int {
	switch x := v.(type) {
	case int64:
		return protowire.SizeTag(fAnyInt) + protowire.SizeVarint(uint64(x))
	case bool:
		return protowire.SizeTag(fAnyBool) + 1
	case float64:
		return protowire.SizeTag(fAnyDouble) + 8
	case string:
		return protowire.SizeTag(fAnyString) + protowire.SizeBytes(len(x))
	}
	return 0
}

func appendBytesField(b []byte, field protowire.Number, v []byte) []byte {
	b = appendTag(b, field, protowire.BytesType)
	b = appendVarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendStringField(b []byte, field protowire.Number, v string) []byte {
	b = appendTag(b, field, protowire.BytesType)
	b = appendVarint(b, uint64(len(v)))
	return append(b, v...)
}

// appendVarint and appendTag are protowire's with the one-byte case
// inlined: nearly every tag, length and small integer of a span is one
// byte, and protowire's general function was a quarter of the encoding.
func appendVarint(b []byte, v uint64) []byte {
	if v < 0x80 {
		return append(b, byte(v))
	}
	return protowire.AppendVarint(b, v)
}

func appendTag(b []byte, field protowire.Number, typ protowire.Type) []byte {
	return appendVarint(b, uint64(field)<<3|uint64(typ&7))
}

func bytesFieldSize(field protowire.Number, n int) int {
	return protowire.SizeTag(field) + protowire.SizeBytes(n)
}

// resourceHeader is a ResourceSpans' fields before its spans: the resource
// and the instrumentation scope, encoded once per service.
type resourceHeader struct {
	resource []byte // field 1 of ResourceSpans, tag included
	scope    []byte // field 1 of ScopeSpans, tag included
}

func newResourceHeader(attrs map[string]string, scopeName, scopeVersion string) resourceHeader {
	var body []byte
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		a := correlate.Attribute{Key: k, Value: attrs[k]}
		body = appendAttribute(body, fResourceAttributes, &a)
	}
	var h resourceHeader
	h.resource = appendBytesField(nil, fResourceSpansResource, body)
	scope := appendStringField(nil, fScopeName, scopeName)
	if scopeVersion != "" {
		scope = appendStringField(scope, fScopeVersion, scopeVersion)
	}
	h.scope = appendBytesField(nil, fScopeSpansScope, scope)
	return h
}

// appendResourceSpans appends one ResourceSpans field of the request: h,
// then one ScopeSpans holding spans, which are Span fields as appendSpan
// wrote them.
func appendResourceSpans(b []byte, h resourceHeader, spans []byte) []byte {
	scopeSpans := len(h.scope) + len(spans)
	b = appendTag(b, fRequestResourceSpans, protowire.BytesType)
	b = appendVarint(b, uint64(len(h.resource)+bytesFieldSize(fResourceSpansScopeSpans, scopeSpans)))
	b = append(b, h.resource...)
	b = appendTag(b, fResourceSpansScopeSpans, protowire.BytesType)
	b = appendVarint(b, uint64(scopeSpans))
	b = append(b, h.scope...)
	return append(b, spans...)
}

// partialSuccess reads an ExportTraceServiceResponse: how many spans the
// collector took the request for but rejected, and why.
func partialSuccess(resp []byte) (rejected int64, msg string, err error) {
	for len(resp) > 0 {
		num, typ, n := protowire.ConsumeTag(resp)
		if n < 0 {
			return 0, "", protowire.ParseError(n)
		}
		resp = resp[n:]
		if num != fResponsePartialSuccess || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, resp); n < 0 {
				return 0, "", protowire.ParseError(n)
			}
			resp = resp[n:]
			continue
		}
		ps, n := protowire.ConsumeBytes(resp)
		if n < 0 {
			return 0, "", protowire.ParseError(n)
		}
		resp = resp[n:]
		for len(ps) > 0 {
			num, typ, n := protowire.ConsumeTag(ps)
			if n < 0 {
				return 0, "", protowire.ParseError(n)
			}
			ps = ps[n:]
			switch {
			case num == fPartialRejectedSpans && typ == protowire.VarintType:
				v, m := protowire.ConsumeVarint(ps)
				if m < 0 {
					return 0, "", protowire.ParseError(m)
				}
				rejected, n = int64(v), m
			case num == fPartialErrorMessage && typ == protowire.BytesType:
				v, m := protowire.ConsumeBytes(ps)
				if m < 0 {
					return 0, "", protowire.ParseError(m)
				}
				msg, n = string(v), m
			default:
				if n = protowire.ConsumeFieldValue(num, typ, ps); n < 0 {
					return 0, "", protowire.ParseError(n)
				}
			}
			ps = ps[n:]
		}
	}
	return rejected, msg, nil
}
