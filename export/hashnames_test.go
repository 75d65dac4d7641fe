package export

import (
	"context"
	"strings"
	"testing"

	"github.com/kpath/kpath/correlate"
)

type keepTraces struct{ got []correlate.Trace }

func (k *keepTraces) Export(t correlate.Trace)    { k.got = append(k.got, t) }
func (k *keepTraces) Close(context.Context) error { return nil }

func TestHashNamesHidesNamesAndKeepsTheRest(t *testing.T) {
	if _, err := HashNames(&keepTraces{}, []byte("short")); err == nil {
		t.Error("a 5-byte key was accepted")
	}
	key := []byte("0123456789abcdef-lab")
	var a, b keepTraces
	ha, _ := HashNames(&a, key)
	hb, _ := HashNames(&b, key)

	tr := podTrace(1)
	tr.Spans[0].Name = "PATCH /api/v1/namespaces/default/pods/nginx/status"
	tr.Spans[0].Attributes = append(tr.Spans[0].Attributes,
		correlate.Attribute{Key: "url.path", Value: "/api/v1/namespaces/default/pods/nginx/status"},
		correlate.Attribute{Key: correlate.AttrResource, Value: "pods"},
		correlate.Attribute{Key: correlate.AttrNodeName, Value: "node-1"},
		correlate.Attribute{Key: correlate.AttrPodUID, Value: "uid-1"})
	ha.Export(tr)
	hb.Export(tr)

	got := a.got[0].Spans[0]
	h := got.Attr(correlate.AttrPodName).(string)
	if !strings.HasPrefix(h, "h-") || len(h) != 18 {
		t.Fatalf("k8s.pod.name = %q, want h- and 16 hex digits", h)
	}
	for what, v := range map[string]any{
		"name": got.Name, "kpath.key": got.Attr(correlate.AttrKey), "url.path": got.Attr("url.path"),
	} {
		s := v.(string)
		if strings.Contains(s, "nginx") || !strings.Contains(s, h) {
			t.Errorf("%s = %q: want the name replaced by %s", what, s, h)
		}
	}
	if got.Name != "PATCH /api/v1/namespaces/default/pods/"+h+"/status" {
		t.Errorf("span name %q", got.Name)
	}
	if got.Attr(correlate.AttrNamespace) != "default" || got.Attr(correlate.AttrNodeName) != "node-1" ||
		got.Attr(correlate.AttrPodUID) != "uid-1" || got.Attr(correlate.AttrRevision) != int64(1234567890123) {
		t.Errorf("namespace, node, UID or revision changed: %v", got.Attributes)
	}
	if b.got[0].Spans[0].Attr(correlate.AttrPodName) != h {
		t.Error("two agents with one key hashed a name differently")
	}
	// The correlator's copy is untouched.
	if tr.Spans[0].Attr(correlate.AttrPodName) != "nginx" {
		t.Error("HashNames changed the trace it was given")
	}
}

// A reconcile's or a controller's sync names its object in an attribute
// of its own and after the namespace in its span name.
func TestHashNamesHidesWhatASyncActedOn(t *testing.T) {
	var k keepTraces
	hn, _ := HashNames(&k, []byte("0123456789abcdef"))
	hn.Export(correlate.Trace{Spans: []correlate.Span{{Name: "sync replicaset shop/web-abc", Attributes: []correlate.Attribute{
		{Key: correlate.AttrNamespace, Value: "shop"},
		{Key: correlate.AttrObjectName, Value: "web-abc"},
		{Key: correlate.AttrController, Value: "replicaset"},
	}}}})
	s := k.got[0].Spans[0]
	h, _ := s.Attr(correlate.AttrObjectName).(string)
	if !strings.HasPrefix(h, "h-") || s.Name != "sync replicaset shop/"+h || s.Attr(correlate.AttrController) != "replicaset" {
		t.Errorf("span %q, %s = %q: want the name hashed, the namespace and controller kept", s.Name, correlate.AttrObjectName, h)
	}
}

// A name that is also a word of the API's paths is replaced only where
// the path puts a name.
func TestHashNamesKeepsThePathsWords(t *testing.T) {
	var k keepTraces
	hn, _ := HashNames(&k, []byte("0123456789abcdef"))
	tr := correlate.Trace{Spans: []correlate.Span{{Name: "PUT /api/v1/namespaces/default/configmaps/v1", Attributes: []correlate.Attribute{
		{Key: correlate.AttrKey, Value: "/registry/configmaps/default/v1"},
		{Key: correlate.AttrResource, Value: "configmaps"},
		{Key: "k8s.configmap.name", Value: "v1"},
	}}}}
	hn.Export(tr)
	h := k.got[0].Spans[0].Attr("k8s.configmap.name").(string)
	if want := "PUT /api/v1/namespaces/default/configmaps/" + h; k.got[0].Spans[0].Name != want {
		t.Errorf("span name %q, want %q", k.got[0].Spans[0].Name, want)
	}
	if got := k.got[0].Spans[0].Attr(correlate.AttrKey); got != "/registry/configmaps/default/"+h {
		t.Errorf("kpath.key %v", got)
	}
}
