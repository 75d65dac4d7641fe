package e2e

import (
	"bufio"
	"context"
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/kpath/kpath/correlate"
)

var (
	crdGVR    = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	widgetGVR = schema.GroupVersionResource{Group: "kpath.dev", Version: "v1", Resource: "widgets"}
)

// TestOperatorReconcilesAreTraced runs the lab's operator (testdata/
// widgetop: controller-runtime, its own CRD) with no flag naming it — the
// agent finds it by its build info — stripped in the release flavour.
// Every Widget create's trace must hold the operator's reconciles of it,
// under the write's root, with their queue wait; a Widget whose first
// reconcile fails has the failure and the retry in that trace, marked, and
// counted in the metrics. A reconcile costs at most 4 probe hits.
func TestOperatorReconcilesAreTraced(t *testing.T) {
	se := begin(t, 6*time.Minute, "kpath-e2e-reconcile-")
	l, ctx, rcv, a, ns := se.l, se.ctx, se.rcv, se.a, se.ns
	dyn := dynamicClient(t, l)
	installWidgetCRD(ctx, t, dyn)

	startWidgetop(ctx, t, l, a, ns)

	revs := map[string]int64{}
	for _, w := range []struct{ name, ask string }{{"plain", ""}, {"flaky", "kpath.dev/fail-first"}, {"later", "kpath.dev/requeue-first"},
		{"again", "kpath.dev/requeue-now-first"}} {
		revs[w.name] = createWidget(ctx, t, dyn, ns, w.name, w.ask)
	}

	// The create's trace: the write's spans from the control plane and the
	// reconciles from the operator, each agent's part derived alike.
	reconcilesOf := func(name string) (tr *trace, results []string) {
		tr = groupTraces(rcv.Spans())[fmt.Sprintf("%x", correlate.WriteTraceID(revs[name]))]
		if tr == nil {
			return nil, nil
		}
		for _, s := range tr.stage("reconcile") {
			results = append(results, fmt.Sprint(attrs(s)[correlate.AttrResult]))
		}
		return tr, results
	}
	err := waitFor(ctx, "the Widgets' create traces with their reconciles", func() (bool, error) {
		done := true
		for name, n := range map[string]int{"plain": 1, "flaky": 2, "later": 2, "again": 2} {
			tr, results := reconcilesOf(name)
			// The write's own spans too: its agent emits them once the
			// request returned, the operator's agent the reconciles.
			done = done && len(results) >= n && tr.root() != nil
		}
		return done, nil
	})
	if err != nil {
		_, plain := reconcilesOf("plain")
		_, flaky := reconcilesOf("flaky")
		_, later := reconcilesOf("later")
		_, again := reconcilesOf("again")
		t.Fatalf("%v: reconciles in the create traces: plain %v, flaky %v, later %v, again %v", err, plain, flaky, later, again)
	}
	for name, want := range map[string][]string{"plain": {correlate.ResultOK}, "flaky": {correlate.ResultError, correlate.ResultOK},
		"later": {correlate.ResultRequeueAfter, correlate.ResultOK}, "again": {correlate.ResultRequeue, correlate.ResultOK}} {
		tr, results := reconcilesOf(name)
		if testing.Verbose() {
			for _, s := range tr.spans {
				t.Logf("%s: span %q stage %v parent %x id %x", name, s.Name, attrs(s)["kpath.stage"], s.ParentSpanId, s.SpanId)
			}
		}
		if err := tr.writeOnly().checkWriteChain("/registry/kpath.dev/widgets/"+ns+"/"+name, revs[name]); err != nil {
			t.Errorf("%s: the create's own spans: %v", name, err)
		}
		root := tr.root()
		if root == nil || fmt.Sprintf("%x", root.SpanId) != fmt.Sprintf("%x", correlate.WriteRootID(revs[name])) {
			t.Fatalf("%s: the create's root is not the span the operator's agent derives", name)
		}
		for i, w := range want {
			if i >= len(results) || results[i] != w {
				t.Errorf("%s: reconcile results %v, want %v first", name, results, want)
				break
			}
		}
		for _, s := range tr.stage("reconcile") {
			at := attrs(s)
			if fmt.Sprintf("%x", s.ParentSpanId) != fmt.Sprintf("%x", root.SpanId) || at["kpath.component"] != "widgetop" ||
				at[correlate.AttrController] != "widget" || at[correlate.AttrObjectName] != name || at["k8s.namespace.name"] != ns {
				t.Errorf("%s: reconcile span %q %v: want it under the create's root, of widgetop's controller widget", name, s.Name, at)
			}
			if s.StartTimeUnixNano < root.StartTimeUnixNano {
				t.Errorf("%s: a reconcile began before the write it reconciled", name)
			}
		}
		if waits := tr.stage("queue-wait"); len(waits) < len(want) {
			t.Errorf("%s: %d queue waits for %d reconciles", name, len(waits), len(want))
		}
		// The reconcile that succeeded made the Widget's ConfigMap and its
		// status: both writes, whole, under its span, which links to their
		// own traces.
		if err := checkReconcileWrites(tr, ns, name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		t.Logf("%s: create rev %d, %d spans in its trace, reconciles %v", name, revs[name], len(tr.spans), results)
	}

	// The agent copies the BPF hit counters into /metrics on a 2 s ticker,
	// so one scrape can hold the reconciles' hits but not yet their
	// writes'. Wait for a scrape that has them all (or the deadline; the
	// checks below then say what is missing).
	var m metrics
	settled, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = waitFor(settled, "widgetop's probe hits counted", func() (bool, error) {
		got, err := a.scrape()
		if err != nil {
			return false, nil
		}
		m = got
		return m.sum("kpath_probe_hits_total", "component", "widgetop", "probe", "operator.client.write") >= 8 &&
			m.sum("kpath_workqueue_wait_seconds_count", "component", "widgetop") >= 7, nil
	})
	if m == nil {
		t.Fatal("the agent's /metrics could not be scraped")
	}
	errs := m.sum("kpath_reconcile_total", "component", "widgetop", "controller", "widget", "result", correlate.ResultError)
	oks := m.sum("kpath_reconcile_total", "component", "widgetop", "controller", "widget", "result", correlate.ResultOK)
	laters := m.sum("kpath_reconcile_total", "component", "widgetop", "controller", "widget", "result", correlate.ResultRequeueAfter)
	agains := m.sum("kpath_reconcile_total", "component", "widgetop", "controller", "widget", "result", correlate.ResultRequeue)
	if errs < 1 || oks < 4 || laters < 1 || agains < 1 || m.sum("kpath_workqueue_wait_seconds_count", "component", "widgetop") < 7 {
		t.Errorf("metrics: %v errors, %v requeued after, %v requeued, %v ok reconciles, %v queue waits; want the failure, both requeues, the four successes and their waits",
			errs, laters, agains, oks, m.sum("kpath_workqueue_wait_seconds_count", "component", "widgetop"))
	}
	// A reconcile's own hits; each write request it (or anything else in
	// the program) makes is one more, counted apart.
	calls := m.sum("kpath_probe_hits_total", "component", "widgetop", "probe", "operator.client.write")
	hits := m.sum("kpath_probe_hits_total", "component", "widgetop") - calls
	all := errs + oks + laters + agains
	perReconcile := hits / all
	t.Logf("widgetop: %.0f probe hits for %.0f reconciles: %.2f a reconcile (its receipts included), all entry or CALL sites; "+
		"and %.0f on its write requests, one each", hits, all, perReconcile, calls)
	if perReconcile > 4 {
		t.Errorf("%.2f probe hits a reconcile, want ≤ 4", perReconcile)
	}
	if calls < 8 {
		t.Errorf("%.0f hits on widgetop's write requests: its four successful reconciles made a ConfigMap and a status write each", calls)
	}
}

// checkReconcileWrites says what is wrong with the writes under the
// successful reconcile of Widget name in its create's trace: the create of
// its ConfigMap and the update of its status, each a request span under
// the reconcile's with the write's storage and etcd spans under it, and a
// link from the reconcile to each write's own trace.
func checkReconcileWrites(tr *trace, ns, name string) error {
	var rec *tracepb.Span
	for _, s := range tr.stage("reconcile") {
		if attrs(s)[correlate.AttrResult] == correlate.ResultOK && rec == nil {
			rec = s
		}
	}
	if rec == nil {
		return fmt.Errorf("no successful reconcile")
	}
	children := map[string]*tracepb.Span{}
	for _, s := range tr.spans {
		if string(s.ParentSpanId) == string(rec.SpanId) && attrs(s)["kpath.stage"] == "request" {
			children[fmt.Sprint(attrs(s)["http.request.method"], " ", attrs(s)["url.path"])] = s
		}
	}
	for _, want := range []string{"POST /api/v1/namespaces/" + ns + "/configmaps", "PUT /apis/kpath.dev/v1/namespaces/" + ns + "/widgets/" + name + "/status"} {
		req := children[want]
		if req == nil {
			return fmt.Errorf("no write %s under the reconcile; its request children: %v", want, slices.Sorted(maps.Keys(children)))
		}
		deeper := 0
		for _, s := range tr.spans {
			if string(s.ParentSpanId) == string(req.SpanId) {
				deeper++
			}
		}
		if deeper == 0 {
			return fmt.Errorf("the write %s under the reconcile has no spans under its request", want)
		}
	}
	made := 0
	for _, l := range rec.Links {
		for _, kv := range l.Attributes {
			if kv.Key == correlate.AttrLink && value(kv.Value) == correlate.LinkWriteMade {
				made++
			}
		}
	}
	if made < 2 {
		return fmt.Errorf("%d links from the reconcile to the writes it made, want 2", made)
	}
	return nil
}

func dynamicClient(t *testing.T, l *lab) *dynamic.DynamicClient {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(l.dir, "admin.kubeconfig"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// installWidgetCRD creates the Widget CRD (kept across tests: it is the
// lab's) and waits until it is served.
func installWidgetCRD(ctx context.Context, t *testing.T, dyn *dynamic.DynamicClient) {
	t.Helper()
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.kpath.dev"},
		"spec": map[string]any{
			"group": "kpath.dev", "scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"subresources": map[string]any{"status": map[string]any{}},
				"schema":       map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
		},
	}}
	if _, err := dyn.Resource(crdGVR).Create(ctx, crd, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("create the Widget CRD: %v", err)
	}
	err := waitFor(ctx, "the Widget CRD established", func() (bool, error) {
		got, err := dyn.Resource(crdGVR).Get(ctx, "widgets.kpath.dev", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
		for _, c := range conds {
			if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Served is not yet listable by every client: wait for the first list.
	err = waitFor(ctx, "widgets served", func() (bool, error) {
		_, err := dyn.Resource(widgetGVR).List(ctx, metav1.ListOptions{Limit: 1})
		return err == nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkOperatorOffsets holds the operator rows' offsets against the DWARF
// of the build: Controller.Name at 0, and &err at 32 in the closure of
// Reconcile's deferred recover; the webhook answer's AdmissionReview in
// six words, its Response (in R11) the sixth, the response's UID first;
// client-go's rest.Request: verb at 160, namespace at 224, resourceName at 264.
func checkOperatorOffsets(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := f.DWARF()
	if err != nil {
		t.Fatalf("widgetop's DWARF: %v", err)
	}
	const ctrl = "sigs.k8s.io/controller-runtime/pkg/internal/controller.Controller[go.shape.struct { k8s.io/apimachinery/pkg/types.NamespacedName }]"
	found := map[string]int64{}
	r := d.Reader()
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag != dwarf.TagStructType {
			continue
		}
		name, _ := e.Val(dwarf.AttrName).(string)
		isCtrl := name == ctrl
		isClosure := strings.HasPrefix(name, "noalg.struct { F uintptr; X0 *"+ctrl+"; X1 context.Context; X2 *error")
		isReview, isResponse := name == "k8s.io/api/admission/v1.AdmissionReview", name == "k8s.io/api/admission/v1.AdmissionResponse"
		isRequest := name == "k8s.io/client-go/rest.Request"
		if !isCtrl && !isClosure && !isReview && !isResponse && !isRequest {
			continue
		}
		typ, err := d.Type(e.Offset)
		if err != nil {
			t.Fatal(err)
		}
		if isReview {
			// Six words: with the receiver and the writer, nine registers.
			found["AdmissionReview size"] = typ.Size()
		}
		for _, fl := range typ.(*dwarf.StructType).Field {
			switch {
			case isCtrl && fl.Name == "Name":
				found["Controller.Name"] = fl.ByteOffset
			case isClosure && fl.Name == "X2":
				found["Reconcile.func1 &err"] = fl.ByteOffset
			case isReview && fl.Name == "Response":
				found["AdmissionReview.Response (R11)"] = fl.ByteOffset
			case isResponse && fl.Name == "UID":
				found["AdmissionResponse.UID"] = fl.ByteOffset
			case isRequest && (fl.Name == "verb" || fl.Name == "namespace" || fl.Name == "resourceName"):
				found["rest.Request."+fl.Name] = fl.ByteOffset
			}
		}
	}
	for field, want := range map[string]int64{"Controller.Name": 0, "Reconcile.func1 &err": 32,
		"AdmissionReview size": 48, "AdmissionReview.Response (R11)": 40, "AdmissionResponse.UID": 0,
		"rest.Request.verb": 160, "rest.Request.namespace": 224, "rest.Request.resourceName": 264} {
		if got, ok := found[field]; !ok || got != want {
			t.Errorf("DWARF of widgetop: %s at %d (found %v), the rows read it at %d", field, got, ok, want)
		}
	}
}

// writeOnly is the part of a write's trace its own agent built: without
// the spans other components (an operator) hang under its root, which run
// after the write, outside its spans' times.
func (tr *trace) writeOnly() *trace {
	out := &trace{id: tr.id}
	for _, s := range tr.spans {
		a := attrs(s)
		switch {
		case a["kpath.stage"] == "reconcile", a["kpath.stage"] == "queue-wait":
		case a["kpath.write_trace"] != nil: // a write a reconcile made, grafted under it
		default:
			out.spans = append(out.spans, s)
		}
	}
	return out
}

// startWidgetop builds the lab's operator (stripped in the release
// flavour, as release images ship operators), runs it on namespace ns with
// no flag naming it to the agent, and waits until agent a found it.
func startWidgetop(ctx context.Context, t *testing.T, l *lab, a *agent, ns string, flags ...string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "widgetop")
	args := []string{"build", "-o", bin}
	if l.flavour == "release" {
		args = append(args, "-ldflags=-s -w")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Dir = "testdata/widgetop"
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build widgetop: %v\n%s", err, out)
	}
	if l.flavour == "normal" {
		checkOperatorOffsets(t, bin)
	}
	op := exec.Command(bin, append([]string{"--kubeconfig=" + filepath.Join(labDir(), "admin.kubeconfig"), "--namespace=" + ns}, flags...)...)
	op.Stderr = os.Stderr
	out, err := op.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := op.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { op.Process.Kill(); op.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "synced\n" {
		t.Fatalf("widgetop did not sync: %q %v", line, err)
	}
	err = waitFor(ctx, "the agent attached to widgetop, unnamed", func() (bool, error) {
		m, err := a.scrape()
		return err == nil && m.sum("kpath_attached_probes", "component", "widgetop") >= 3, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// createWidget creates a Widget in ns, with annotation ask when not "",
// and returns the revision its create made.
func createWidget(ctx context.Context, t *testing.T, dyn *dynamic.DynamicClient, ns, name, ask string) int64 {
	t.Helper()
	obj := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "kpath.dev/v1", "kind": "Widget",
		"metadata": map[string]any{"name": name}}}
	if ask != "" {
		obj.SetAnnotations(map[string]string{ask: "yes"})
	}
	got, err := dyn.Resource(widgetGVR).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rev, _ := strconv.ParseInt(got.GetResourceVersion(), 10, 64)
	return rev
}
