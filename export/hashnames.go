package export

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"

	"github.com/kpath/kpath/correlate"
)

// MinHashKey is the shortest key HashNames takes: names are guessable, so
// only a secret key keeps a dictionary from reversing their hashes.
const MinHashKey = 16

// HashNames returns an exporter that replaces every object name in a
// trace — the k8s.<kind>.name attributes, the name in kpath.key, and the
// same path segment in url.path and span names — with "h-" and 16 hex
// digits of HMAC-SHA256(key, name), and passes the trace on to next.
// Agents given the same key write the same hash for a name, so traces
// still join and a name can be searched by its hash. Namespaces, node
// names, UIDs and revisions are kept: they are what an operator needs to
// act on a trace. Trace IDs of writes are derived from the etcd key and the
// revision: reversing one means guessing both, so they are left as they are.
func HashNames(next Exporter, key []byte) (Exporter, error) {
	if len(key) < MinHashKey {
		return nil, errors.New("the name-hashing key is shorter than 16 bytes")
	}
	return &nameHasher{next: next, key: key}, nil
}

type nameHasher struct {
	next Exporter
	key  []byte
}

func (h *nameHasher) hash(name string) string {
	m := hmac.New(sha256.New, h.key)
	m.Write([]byte(name))
	return "h-" + hex.EncodeToString(m.Sum(nil)[:8])
}

func (h *nameHasher) Export(t correlate.Trace) {
	// The trace's spans are shared with the correlator: rewrite copies.
	spans := make([]correlate.Span, len(t.Spans))
	names := map[string]string{}
	resources := map[string]bool{}
	for i := range t.Spans {
		s := t.Spans[i]
		s.Attributes = append([]correlate.Attribute(nil), s.Attributes...)
		for _, n := range spanNames(&s) {
			if _, ok := names[n]; !ok {
				names[n] = h.hash(n)
			}
		}
		if r, ok := s.Attr(correlate.AttrResource).(string); ok {
			resources[r] = true
		}
		// "NS/NAME" in a reconcile's or a sync's span name: a name comes
		// after its namespace too.
		if ns, ok := s.Attr(correlate.AttrNamespace).(string); ok && ns != "" {
			resources[ns] = true
		}
		spans[i] = s
	}
	for i := range spans {
		s := &spans[i]
		s.Name = replaceNames(s.Name, names, resources)
		for j := range s.Attributes {
			a := &s.Attributes[j]
			v, ok := a.Value.(string)
			if !ok {
				continue
			}
			switch {
			case isObjectNameKey(a.Key):
				if hv, ok := names[v]; ok {
					a.Value = hv
				}
			case a.Key == correlate.AttrKey:
				// /registry/RESOURCE/[NS/]NAME: the name is the last segment.
				if i := strings.LastIndexByte(v, '/'); i >= 0 {
					if hv, ok := names[v[i+1:]]; ok {
						a.Value = v[:i+1] + hv
					}
				}
			case a.Key == "url.path":
				a.Value = replaceNames(v, names, resources)
			}
		}
	}
	t.Spans = spans
	h.next.Export(t)
}

func (h *nameHasher) Close(ctx context.Context) error { return h.next.Close(ctx) }

// spanNames are the object names a span carries.
func spanNames(s *correlate.Span) []string {
	var out []string
	for _, a := range s.Attributes {
		v, ok := a.Value.(string)
		if !ok || v == "" {
			continue
		}
		switch {
		case isObjectNameKey(a.Key):
			out = append(out, v)
		case a.Key == correlate.AttrKey:
			if o := correlate.ParseKey(v); o.Name != "" {
				out = append(out, o.Name)
			}
		}
	}
	return out
}

// isObjectNameKey: k8s.pod.name, k8s.configmap.name…, but not the
// namespace's or the node's; and the name of what a reconcile or a
// controller's sync acted on.
func isObjectNameKey(k string) bool {
	return strings.HasPrefix(k, "k8s.") && strings.HasSuffix(k, ".name") &&
		k != correlate.AttrNamespace && k != correlate.AttrNodeName || k == correlate.AttrObjectName
}

// replaceNames replaces the names in a request path, or in a span name
// that holds one ("PATCH /api/v1/namespaces/NS/pods/NAME/status"): a
// '/'- or ' '-separated segment that is a name, right after a segment that
// is a resource, as the API's paths put them. Anything else is kept, so a
// pod named "v1" leaves the path's "/api/v1/" alone.
func replaceNames(s string, names map[string]string, resources map[string]bool) string {
	if len(names) == 0 {
		return s
	}
	var b strings.Builder
	start, prev := 0, ""
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '/' && s[i] != ' ' {
			continue
		}
		seg := s[start:i]
		if hv, ok := names[seg]; ok && resources[prev] {
			seg = hv
		}
		prev = s[start:i]
		b.WriteString(seg)
		if i < len(s) {
			b.WriteByte(s[i])
		}
		start = i + 1
	}
	return b.String()
}
