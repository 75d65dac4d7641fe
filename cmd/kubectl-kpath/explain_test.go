package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kpath/kpath/correlate"
	"github.com/kpath/kpath/export"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func traceID(b byte) correlate.TraceID {
	var id correlate.TraceID
	for i := range id {
		id[i] = b
	}
	return id
}

func spanID(b byte) correlate.SpanID {
	var id correlate.SpanID
	for i := range id {
		id[i] = b
	}
	return id
}

func span(tr, id, parent byte, name, comp, stage string, from, to time.Duration, extra ...correlate.Attribute) correlate.Span {
	s := correlate.Span{TraceID: traceID(tr), SpanID: spanID(id), Name: name, Start: t0.Add(from), End: t0.Add(to),
		Attributes: append([]correlate.Attribute{
			{Key: correlate.AttrComponent, Value: comp}, {Key: correlate.AttrStage, Value: stage},
		}, extra...)}
	if parent != 0 {
		s.Parent = spanID(parent)
	}
	return s
}

var podAttrs = []correlate.Attribute{
	{Key: correlate.AttrKey, Value: "/registry/pods/default/web"},
	{Key: correlate.AttrRevision, Value: int64(9007199254740993)}, // 2^53+1: must stay exact
	{Key: correlate.AttrNamespace, Value: "default"},
	{Key: correlate.AttrPodName, Value: "web"},
	{Key: correlate.AttrPodUID, Value: "uid-web"},
}

// node1 ran the control plane: the write.
func node1Traces() []correlate.Trace {
	return []correlate.Trace{{ID: traceID(1), Complete: true, Spans: []correlate.Span{
		span(1, 1, 0, "POST /api/v1/namespaces/default/pods", "kube-apiserver", "request", 0, 3*time.Millisecond, podAttrs...),
		span(1, 2, 1, "etcd txn put", "kube-apiserver", "storage-write", time.Millisecond, 2500*time.Microsecond, podAttrs...),
		span(1, 3, 2, "wal fsync", "etcd", "wal-fsync", 1200*time.Microsecond, 2400*time.Microsecond, podAttrs...),
	}}}
}

// node2 ran the pod: the same trace's kubelet part (and the root, seen
// too), and a later status write.
func node2Traces() []correlate.Trace {
	uid := []correlate.Attribute{{Key: correlate.AttrPodUID, Value: "uid-web"}}
	return []correlate.Trace{
		{ID: traceID(1), Complete: false, Spans: []correlate.Span{
			span(1, 1, 0, "POST /api/v1/namespaces/default/pods", "kube-apiserver", "request", 0, 3*time.Millisecond, podAttrs...),
			span(1, 4, 1, "container start", "kubelet", "container-start", 2*time.Millisecond, 2900*time.Microsecond, uid...),
		}},
		{ID: traceID(2), Complete: true, Spans: []correlate.Span{
			span(2, 5, 0, "status write", "kubelet", "status-write", time.Second, time.Second+time.Millisecond, uid...),
		}},
	}
}

func answerOf(agent, node string, ts []correlate.Trace) answer {
	r := export.NewRecent(export.RecentOptions{Node: node})
	for _, t := range ts {
		r.Export(t)
	}
	return answer{agent: agent, node: node, resp: export.TracesResponse{Node: node, Traces: r.Query(export.RecentQuery{})}}
}

func TestMerge(t *testing.T) {
	got, err := merge([]answer{answerOf("a", "n1", node1Traces()), answerOf("b", "n2", node2Traces())})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("%d traces, want 2", len(got))
	}
	first := got[0]
	if first.ID != traceID(1) || len(first.Spans) != 4 || !first.Complete {
		t.Errorf("trace 1: id %x, %d spans (want 4: the root once), complete %v", first.ID, len(first.Spans), first.Complete)
	}
	if strings.Join(first.nodes, ",") != "n1,n2" {
		t.Errorf("trace 1 nodes %v", first.nodes)
	}
	for i := 1; i < len(first.Spans); i++ {
		if first.Spans[i].Start.Before(first.Spans[i-1].Start) {
			t.Errorf("spans not by start time")
		}
	}
	if rev := first.Spans[0].Attr(correlate.AttrRevision); rev != int64(9007199254740993) {
		t.Errorf("revision %v (%T) after JSON", rev, rev)
	}
	if got[1].ID != traceID(2) || strings.Join(got[1].nodes, ",") != "n2" {
		t.Errorf("trace 2: %x from %v", got[1].ID, got[1].nodes)
	}
}

// fakeCluster stands in for the API server: it lists agent pods, knows the
// pod being explained, and answers pods/proxy requests with what each
// agent's Recent store holds, as the agent's handler serves it.
type fakeCluster struct {
	agents   []corev1.Pod
	stores   map[string]*export.Recent // agent pod name → store; missing: the agent does not answer
	target   *corev1.Pod
	requests []string
	guarded  map[string]bool // agent pod name → it serves HTTPS (--metrics-auth=kubernetes)
}

// fakeDiscovery is the fake API server's discovery: the core group and a
// custom resource with a short name.
var fakeDiscovery = map[string]string{
	"/api":  `{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:6443"}]}`,
	"/apis": `{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"kpath.dev","versions":[{"groupVersion":"kpath.dev/v1","version":"v1"}],"preferredVersion":{"groupVersion":"kpath.dev/v1","version":"v1"}}]}`,
	"/api/v1": `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"v1","resources":[
		{"name":"pods","singularName":"pod","namespaced":true,"kind":"Pod","verbs":["get","list"],"shortNames":["po"]},
		{"name":"configmaps","singularName":"configmap","namespaced":true,"kind":"ConfigMap","verbs":["get","list"],"shortNames":["cm"]},
		{"name":"namespaces","singularName":"namespace","namespaced":false,"kind":"Namespace","verbs":["get","list"],"shortNames":["ns"]}]}`,
	"/apis/kpath.dev/v1": `{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"kpath.dev/v1","resources":[
		{"name":"widgets","singularName":"widget","namespaced":true,"kind":"Widget","verbs":["get","list"],"shortNames":["wd"]}]}`,
}

func agentPod(name, node string, port int32, phase corev1.PodPhase) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kpath", Labels: map[string]string{"app.kubernetes.io/name": "kpath-agent"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "agent",
			Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: port}}}}},
		Status: corev1.PodStatus{Phase: phase},
	}
}

func (f *fakeCluster) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests = append(f.requests, r.URL.String())
	writeJSON := func(v any) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(v)
	}
	p := r.URL.Path
	if d, ok := fakeDiscovery[p]; ok {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, d)
		return
	}
	switch {
	case p == "/api/v1/namespaces/kpath/pods":
		if r.URL.Query().Get("labelSelector") != "app.kubernetes.io/name=kpath-agent" {
			http.Error(w, "unexpected selector", 400)
			return
		}
		writeJSON(&corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}, Items: f.agents})
	case strings.HasPrefix(p, "/api/v1/namespaces/default/pods/") && !strings.Contains(p, "/proxy"):
		name := strings.TrimPrefix(p, "/api/v1/namespaces/default/pods/")
		if f.target == nil || f.target.Name != name {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"pods %q not found","details":{"name":%q,"kind":"pods"}}`, name, name)
			return
		}
		writeJSON(f.target)
	case strings.HasPrefix(p, "/api/v1/namespaces/kpath/pods/") && strings.Contains(p, "/proxy/"):
		rest := strings.TrimPrefix(p, "/api/v1/namespaces/kpath/pods/")
		target, path, _ := strings.Cut(rest, "/proxy")
		name, port, _ := strings.Cut(target, ":")
		var want int32
		for _, a := range f.agents {
			if a.Name == name {
				want = a.Spec.Containers[0].Ports[0].ContainerPort
			}
		}
		if f.guarded[name] {
			// What Go's TLS listener answers to plain HTTP, passed on by the proxy.
			http.Error(w, "Client sent an HTTP request to an HTTPS server.", http.StatusBadRequest)
			return
		}
		st, ok := f.stores[name]
		if !ok || port != fmt.Sprint(want) || path != tracesPath {
			http.Error(w, "Error trying to reach service: dial tcp 10.0.0.9:9464: connect: connection refused", http.StatusServiceUnavailable)
			return
		}
		st.Handler().ServeHTTP(w, r)
	default:
		http.Error(w, "not found: "+p, 404)
	}
}

func kubeconfigFor(t *testing.T, url string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: ctx, context: {cluster: c, user: u, namespace: default}}]
current-context: ctx
`, url)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func storeOf(node string, ts []correlate.Trace) *export.Recent {
	r := export.NewRecent(export.RecentOptions{Node: node})
	for _, t := range ts {
		r.Export(t)
	}
	return r
}

func runAgainst(t *testing.T, f *fakeCluster, args ...string) (string, string, error) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Setenv("KUBECONFIG", kubeconfigFor(t, srv.URL))
	var out, errOut bytes.Buffer
	// The fake API server answers pods/proxy, not port-forwards.
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--via") }) {
		args = append(args, "--via=proxy")
	}
	err := run(context.Background(), append(args, "--timeout=5s"), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestExplainAgainstFakeAgents(t *testing.T) {
	other := storeOf("n4", []correlate.Trace{{ID: traceID(9), Complete: true, Spans: []correlate.Span{
		span(9, 9, 0, "POST other", "kube-apiserver", "request", 0, time.Millisecond,
			correlate.Attribute{Key: correlate.AttrKey, Value: "/registry/pods/default/other"}),
	}}})
	f := &fakeCluster{
		agents: []corev1.Pod{
			agentPod("kpath-agent-a", "n1", 9464, corev1.PodRunning),
			agentPod("kpath-agent-b", "n2", 19464, corev1.PodRunning),
			agentPod("kpath-agent-c", "n3", 9464, corev1.PodRunning),
			agentPod("kpath-agent-d", "n5", 9464, corev1.PodPending),
			agentPod("kpath-agent-e", "n4", 9464, corev1.PodRunning),
		},
		stores: map[string]*export.Recent{
			"kpath-agent-a": storeOf("n1", node1Traces()),
			"kpath-agent-b": storeOf("n2", node2Traces()),
			"kpath-agent-e": other,
		},
		target: &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: types.UID("uid-web")}},
	}
	// Flags after the argument, as kubectl users type them.
	out, errOut, err := runAgainst(t, f, "explain", "pod/web", "-n", "default")
	if err != nil {
		t.Fatalf("explain: %v\nstderr: %s", err, errOut)
	}
	t.Logf("stdout:\n%s\nstderr:\n%s", out, errOut)
	for _, want := range []string{
		"pod default/web (uid uid-web): 2 trace(s) from 3 of 5 agent(s)",
		"trace 0101010101010101", "trace 0202020202020202",
		"key=/registry/pods/default/web",
		"◀ slowest", "kubelet/container-start", "(merged from nodes n1, n2)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if strings.Contains(out, "other") {
		t.Errorf("stdout shows another pod's trace")
	}
	for _, want := range []string{
		"agent kpath-agent-c (node n3) did not answer", "continuing with the others",
		"agent kpath-agent-d (node n5) did not answer: pod is Pending",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	var sawUID bool
	for _, r := range f.requests {
		if strings.Contains(r, "/proxy/api/v1/traces") && strings.Contains(r, "uid=uid-web") {
			sawUID = true
		}
	}
	if !sawUID {
		t.Errorf("agents were not asked by UID: %v", f.requests)
	}
}

func TestExplainErrors(t *testing.T) {
	t.Run("no agents", func(t *testing.T) {
		_, _, err := runAgainst(t, &fakeCluster{}, "explain", "pod/web")
		if err == nil || !strings.Contains(err.Error(), "no kpath agent pods in namespace kpath") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("no agent answers", func(t *testing.T) {
		f := &fakeCluster{agents: []corev1.Pod{agentPod("kpath-agent-a", "n1", 9464, corev1.PodRunning)}}
		_, errOut, err := runAgainst(t, f, "explain", "pod/web")
		if err == nil || !strings.Contains(err.Error(), "none of the 1 kpath agents answered") {
			t.Errorf("err = %v", err)
		}
		if !strings.Contains(errOut, "does not exist") {
			t.Errorf("stderr does not say the pod is gone: %s", errOut)
		}
	})
	t.Run("a guarded agent through pods/proxy", func(t *testing.T) {
		f := &fakeCluster{agents: []corev1.Pod{agentPod("kpath-agent-a", "n1", 9464, corev1.PodRunning)}, guarded: map[string]bool{"kpath-agent-a": true}}
		_, errOut, err := runAgainst(t, f, "explain", "pod/web")
		if err == nil || !strings.Contains(errOut, "agent kpath-agent-a serves its endpoints over HTTPS") || !strings.Contains(errOut, "use --via=port-forward") {
			t.Errorf("err = %v, stderr:\n%s", err, errOut)
		}
	})
	t.Run("no traces", func(t *testing.T) {
		f := &fakeCluster{
			agents: []corev1.Pod{agentPod("kpath-agent-a", "n1", 9464, corev1.PodRunning)},
			stores: map[string]*export.Recent{"kpath-agent-a": storeOf("n1", node1Traces())},
		}
		_, _, err := runAgainst(t, f, "explain", "pod/nope", "-n", "default")
		if err == nil || !strings.Contains(err.Error(), "no traces for pod default/nope on 1 agent(s)") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{{}, {"explain"}, {"explain", "/x"}, {"frob"}, {"explain", "pod/x", "--via=ssh"}} {
			_, _, err := runAgainst(t, &fakeCluster{}, args...)
			if _, ok := err.(usageError); !ok {
				t.Errorf("%v: err = %v, want a usage error", args, err)
			}
		}
	})
}

func TestObjectName(t *testing.T) {
	for in, want := range map[string][2]string{"pod/a": {"", "a"}, "pods/b": {"", "b"}, "po/c": {"", "c"}, "d": {"", "d"},
		"deploy/e": {"deploy", "e"}, "widgets.kpath.dev/f": {"widgets.kpath.dev", "f"}} {
		if r, n, err := objectName(in); err != nil || r != want[0] || n != want[1] {
			t.Errorf("%s: %q %q %v", in, r, n, err)
		}
	}
	for _, in := range []string{"/a", "pod/", "pod/a/b", "svc/"} {
		if _, _, err := objectName(in); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
}

// A custom resource's trace: its write and the operator's reconcile of it.
func widgetTraces() []correlate.Trace {
	attrs := []correlate.Attribute{{Key: correlate.AttrKey, Value: "/registry/kpath.dev/widgets/default/w1"}}
	attrs = append(attrs, correlate.ParseKey("/registry/kpath.dev/widgets/default/w1").Attributes()...)
	return []correlate.Trace{{ID: traceID(7), Complete: true, Spans: []correlate.Span{
		span(7, 1, 0, "POST /apis/kpath.dev/v1/namespaces/default/widgets", "kube-apiserver", "request", 0, 3*time.Millisecond, attrs...),
		span(7, 2, 1, "reconcile default/w1", "widgetop", "reconcile", 5*time.Millisecond, 45*time.Millisecond, attrs...),
	}}}
}

func TestExplainAnyObject(t *testing.T) {
	f := &fakeCluster{
		agents: []corev1.Pod{agentPod("kpath-agent-a", "n1", 9464, corev1.PodRunning)},
		stores: map[string]*export.Recent{"kpath-agent-a": storeOf("n1", append(widgetTraces(), node1Traces()...))},
	}
	for _, arg := range []string{"widget/w1", "widgets.kpath.dev/w1", "wd/w1", "widgets.v1.kpath.dev/w1"} {
		out, errOut, err := runAgainst(t, f, "explain", arg)
		if err != nil {
			t.Errorf("explain %s: %v\n%s", arg, err, errOut)
			continue
		}
		for _, want := range []string{"widgets.kpath.dev default/w1: 1 trace(s)", "widgetop/reconcile", "reconcile default/"} {
			if !strings.Contains(out, want) {
				t.Errorf("explain %s: no %q in:\n%s", arg, want, out)
			}
		}
		if strings.Contains(out, "etcd txn put") {
			t.Errorf("explain %s printed the pod's trace:\n%s", arg, out)
		}
	}
	if _, _, err := runAgainst(t, f, "explain", "gadget/g1"); err == nil || !strings.Contains(err.Error(), `"gadget" is not a resource type this cluster serves`) {
		t.Errorf("explain gadget/g1: %v", err)
	}
	if _, _, err := runAgainst(t, f, "explain", "configmap/nothing"); err == nil || !strings.Contains(err.Error(), "no traces for configmaps default/nothing") {
		t.Errorf("explain configmap/nothing: %v", err)
	}
}

// A Jaeger-like query API: /api/v3/traces/{id} as OTLP/JSON.
func fakeTraceStore(t *testing.T, id correlate.TraceID) (*httptest.Server, *int) {
	t.Helper()
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.URL.Path != fmt.Sprintf("/api/v3/traces/%x", id[:]) {
			http.Error(w, `{"error":{"code":404,"message":"trace not found"}}`, http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, `{"result":{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"kube-apiserver"}}]},
"scopeSpans":[{"scope":{"name":"kpath"},"spans":[
 {"traceId":"%[1]x","spanId":"0101010101010101","name":"pod default/web startup","startTimeUnixNano":"%[2]d","endTimeUnixNano":"%[3]d",
  "attributes":[{"key":"kpath.component","value":{"stringValue":"kube-apiserver"}},{"key":"kpath.stage","value":{"stringValue":"pod-startup"}},
   {"key":"kpath.revision","value":{"intValue":"9007199254740993"}},{"key":"kpath.complete","value":{"boolValue":true}}]},
 {"traceId":"%[1]x","spanId":"0202020202020202","parentSpanId":"0101010101010101","name":"sandbox","startTimeUnixNano":"%[2]d","endTimeUnixNano":"%[4]d",
  "attributes":[{"key":"kpath.component","value":{"stringValue":"kubelet"}},{"key":"kpath.stage","value":{"stringValue":"sandbox"}}]}]}]}]}}`,
			id[:], t0.UnixNano(), t0.Add(2*time.Second).UnixNano(), t0.Add(1500*time.Millisecond).UnixNano())
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestExplainReadsTheTraceStoreFirst(t *testing.T) {
	f := &fakeCluster{
		agents: []corev1.Pod{agentPod("kpath-agent-a", "n1", 9464, corev1.PodRunning)},
		stores: map[string]*export.Recent{"kpath-agent-a": storeOf("n1", node1Traces())},
		target: &corev1.Pod{TypeMeta: metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default", UID: types.UID("uid-web")}},
	}
	store, hits := fakeTraceStore(t, correlate.PodTraceID("uid-web"))
	out, errOut, err := runAgainst(t, f, "explain", "pod/web", "--trace-store="+store.URL)
	if err != nil {
		t.Fatalf("explain: %v\nstderr: %s", err, errOut)
	}
	if !strings.Contains(out, "its startup trace from "+store.URL) || !strings.Contains(out, "kubelet/sandbox") || !strings.Contains(out, "◀ slowest") {
		t.Errorf("stdout:\n%s", out)
	}
	for _, r := range f.requests {
		if strings.Contains(r, "namespaces/kpath/pods") {
			t.Errorf("the agents were asked though the store had the trace: %s", r)
		}
	}
	if *hits != 1 {
		t.Errorf("%d requests to the store, want 1", *hits)
	}

	// A pod the store does not hold: the agents are asked, and stderr says why.
	f.target.UID = "uid-unknown"
	out, errOut, err = runAgainst(t, f, "explain", "pod/web", "--trace-store="+store.URL)
	if err != nil {
		t.Fatalf("explain with a store miss: %v\nstderr: %s", err, errOut)
	}
	if !strings.Contains(errOut, "is not in "+store.URL) || !strings.Contains(out, "from 1 of 1 agent(s)") {
		t.Errorf("a store miss did not fall back to the agents:\nstdout:\n%s\nstderr:\n%s", out, errOut)
	}
}
