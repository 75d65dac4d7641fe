package export

import (
	"maps"
	"os"

	"github.com/kpath/kpath/correlate"
)

// unknownService is the service of a span that names no component; every
// span kpath builds names one, so seeing it in a trace store is a bug.
const unknownService = "kpath-unknown-component"

// maxServices bounds the resources kept: components come from the
// catalogue, but a bug must not grow the map without end.
const maxServices = 256

// resources holds each service's encoded resource and scope, made once.
type resources struct {
	common   map[string]string
	instance string // this node, for service.instance.id
	version  string
	byName   map[string]resourceHeader
}

func newResources(common map[string]string, version string) *resources {
	r := &resources{common: maps.Clone(common), version: version, byName: map[string]resourceHeader{}}
	if r.common == nil {
		r.common = map[string]string{}
	}
	delete(r.common, "service.name")
	delete(r.common, "service.instance.id")
	r.common["telemetry.distro.name"] = ScopeName
	if version != "" {
		r.common["telemetry.distro.version"] = version
	}
	r.instance = r.common["k8s.node.name"]
	if r.instance == "" {
		r.instance, _ = os.Hostname()
	}
	return r
}

func (r *resources) header(service string) resourceHeader {
	if h, ok := r.byName[service]; ok {
		return h
	}
	attrs := maps.Clone(r.common)
	attrs["service.name"] = service
	// One component runs once per node: node and component name the
	// instance, and stay the same across restarts of either.
	attrs["service.instance.id"] = r.instance + "/" + service
	h := newResourceHeader(attrs, ScopeName, r.version)
	if len(r.byName) < maxServices {
		r.byName[service] = h
	}
	return h
}

// otlpBatch is the spans of one upload, encoded as they are added and
// grouped by the service they describe.
type otlpBatch struct {
	res      *resources
	services []string          // in the order first seen, for a stable request
	encoded  map[string][]byte // Span fields per service
	spans    int
	req      []byte
}

func newOTLPBatch(res *resources) *otlpBatch {
	return &otlpBatch{res: res, encoded: map[string][]byte{}}
}

func (b *otlpBatch) add(s *correlate.Span) {
	service, _ := s.Attr(correlate.AttrComponent).(string)
	if service == "" {
		service = unknownService
	}
	buf, ok := b.encoded[service]
	if !ok || len(buf) == 0 {
		b.services = append(b.services, service)
	}
	b.encoded[service] = appendSpan(buf, s)
	b.spans++
}

// request encodes the ExportTraceServiceRequest; it is valid until reset.
func (b *otlpBatch) request() []byte {
	req := b.req[:0]
	for _, service := range b.services {
		req = appendResourceSpans(req, b.res.header(service), b.encoded[service])
	}
	b.req = req
	return req
}

// reset empties the batch and keeps its buffers, but for services that
// were in no batch since the last reset: a buffer is kept only while used.
func (b *otlpBatch) reset() {
	for service, buf := range b.encoded {
		if len(buf) == 0 {
			delete(b.encoded, service)
			continue
		}
		b.encoded[service] = buf[:0]
	}
	b.services = b.services[:0]
	b.spans = 0
}
