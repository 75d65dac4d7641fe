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
	b = protowire.AppendTag(b, fScopeSpansSpans, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(spanSize(s)))
	b = appendBytesField(b, fSpanTraceID, s.TraceID[:])
	b = appendBytesField(b, fSpanSpanID, s.SpanID[:])
	if s.Parent != (correlate.SpanID{}) {
		b = appendBytesField(b, fSpanParentSpanID, s.Parent[:])
	}
	b = appendStringField(b, fSpanName, s.Name)
	b = protowire.AppendTag(b, fSpanKind, protowire.VarintType)
	b = protowire.AppendVarint(b, spanKindInternal)
	b = protowire.AppendTag(b, fSpanStart, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, unixNano(s.Start))
	b = protowire.AppendTag(b, fSpanEnd, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, unixNano(s.End))
	for i := range s.Attributes {
		b = appendAttribute(b, fSpanAttributes, &s.Attributes[i])
	}
	for i := range s.Links {
		l := &s.Links[i]
		b = protowire.AppendTag(b, fSpanLinks, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(linkSize(l)))
		b = appendBytesField(b, fLinkTraceID, l.TraceID[:])
		b = appendBytesField(b, fLinkSpanID, l.SpanID[:])
		for j := range l.Attributes {
			b = appendAttribute(b, fLinkAttributes, &l.Attributes[j])
		}
	}
	return b
}

func linkSize(l *correlate.Link) int {
	n := bytesFieldSize(fLinkTraceID, len(l.TraceID)) + bytesFieldSize(fLinkSpanID, len(l.SpanID))
	for j := range l.Attributes {
		n += attributeSize(fLinkAttributes, &l.Attributes[j])
	}
	return n
}

func spanSize(s *correlate.Span) int {
	n := bytesFieldSize(fSpanTraceID, len(s.TraceID)) + bytesFieldSize(fSpanSpanID, len(s.SpanID)) +
		bytesFieldSize(fSpanName, len(s.Name)) +
		protowire.SizeTag(fSpanKind) + protowire.SizeVarint(spanKindInternal) +
		2*(protowire.SizeTag(fSpanStart)+8)
	if s.Parent != (correlate.SpanID{}) {
		n += bytesFieldSize(fSpanParentSpanID, len(s.Parent))
	}
	for i := range s.Attributes {
		n += attributeSize(fSpanAttributes, &s.Attributes[i])
	}
	for i := range s.Links {
		n += bytesFieldSize(fSpanLinks, linkSize(&s.Links[i]))
	}
	return n
}

// appendAttribute appends a as a KeyValue field; a nil value is left out, as
// an attribute nobody set.
func appendAttribute(b []byte, field protowire.Number, a *correlate.Attribute) []byte {
	if a.Value == nil {
		return b
	}
	v := attrValue(a.Value)
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(keyValueSize(a.Key, v)))
	b = appendStringField(b, fKeyValueKey, a.Key)
	b = protowire.AppendTag(b, fKeyValueValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(anyValueSize(v)))
	switch x := v.(type) {
	case int64:
		b = protowire.AppendTag(b, fAnyInt, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(x))
	case bool:
		b = protowire.AppendTag(b, fAnyBool, protowire.VarintType)
		b = protowire.AppendVarint(b, protowire.EncodeBool(x))
	case float64:
		b = protowire.AppendTag(b, fAnyDouble, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(x))
	case string:
		b = appendStringField(b, fAnyString, x)
	}
	return b
}

func attributeSize(field protowire.Number, a *correlate.Attribute) int {
	if a.Value == nil {
		return 0
	}
	return bytesFieldSize(field, keyValueSize(a.Key, attrValue(a.Value)))
}

func keyValueSize(key string, v any) int {
	return bytesFieldSize(fKeyValueKey, len(key)) + bytesFieldSize(fKeyValueValue, anyValueSize(v))
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
		return bytesFieldSize(fAnyString, len(x))
	}
	return 0
}

func appendBytesField(b []byte, field protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendStringField(b []byte, field protowire.Number, v string) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	return protowire.AppendString(b, v)
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
	b = protowire.AppendTag(b, fRequestResourceSpans, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(h.resource)+bytesFieldSize(fResourceSpansScopeSpans, scopeSpans)))
	b = append(b, h.resource...)
	b = protowire.AppendTag(b, fResourceSpansScopeSpans, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(scopeSpans))
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
