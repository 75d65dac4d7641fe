package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// expected is one write the test made and what kpath must report for it.
type expected struct {
	op     string // create, update, patch, delete
	method string // HTTP method of the request
	key    string // etcd key
	rev    int64  // resourceVersion after the write; 0 for deletes (client-go does not return it)
}

// makeNamespace creates a namespace for the test and waits for its default
// ServiceAccount (pods are refused without it).
func makeNamespace(ctx context.Context, t *testing.T, l *lab, prefix string) string {
	t.Helper()
	ns, err := l.client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	err = waitFor(ctx, "default ServiceAccount in "+ns.Name, func() (bool, error) {
		_, err := l.client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// parkedPod never schedules (no node has the label), so only this test writes it.
func parkedPod(name string) *corev1.Pod {
	no := false
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "kpath-e2e"}},
		Spec: corev1.PodSpec{
			NodeSelector:                 map[string]string{"kpath.io/e2e-parked": "true"},
			AutomountServiceAccountToken: &no,
			Containers:                   []corev1.Container{{Name: "c", Image: "kpath.local/workload:v1", ImagePullPolicy: corev1.PullNever}},
		},
	}
}

// writes makes 100 writes through client-go: ConfigMaps and Pods created,
// updated, patched and deleted.
func writes(ctx context.Context, t *testing.T, l *lab, ns string) []expected {
	t.Helper()
	var exp []expected
	cms := l.client.CoreV1().ConfigMaps(ns)
	pods := l.client.CoreV1().Pods(ns)
	cmKey := func(n string) string { return "/registry/configmaps/" + ns + "/" + n }
	podKey := func(n string) string { return "/registry/pods/" + ns + "/" + n }
	rv := func(o metav1.Object) int64 {
		var v int64
		fmt.Sscan(o.GetResourceVersion(), &v)
		return v
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	patch := []byte(`{"metadata":{"labels":{"kpath-e2e-patched":"yes"}}}`)

	// ConfigMaps: 25 creates, 10 updates, 10 patches, 10 deletes.
	for i := 0; i < 25; i++ {
		name := fmt.Sprintf("cm-%02d", i)
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"i": fmt.Sprint(i)}}, metav1.CreateOptions{})
		must(err)
		exp = append(exp, expected{"create", "POST", cmKey(name), rv(cm)})
	}
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("cm-%02d", i)
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		must(err)
		cm.Data["updated"] = "yes"
		cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		must(err)
		exp = append(exp, expected{"update", "PUT", cmKey(name), rv(cm)})
	}
	for i := 10; i < 20; i++ {
		name := fmt.Sprintf("cm-%02d", i)
		cm, err := cms.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		must(err)
		exp = append(exp, expected{"patch", "PATCH", cmKey(name), rv(cm)})
	}
	for i := 15; i < 25; i++ {
		name := fmt.Sprintf("cm-%02d", i)
		must(cms.Delete(ctx, name, metav1.DeleteOptions{}))
		exp = append(exp, expected{"delete", "DELETE", cmKey(name), 0})
	}

	// Pods: 15 creates, 5 updates, 10 patches, 15 deletes.
	for i := 0; i < 15; i++ {
		name := fmt.Sprintf("pod-%02d", i)
		p, err := pods.Create(ctx, parkedPod(name), metav1.CreateOptions{})
		must(err)
		exp = append(exp, expected{"create", "POST", podKey(name), rv(p)})
	}
	for i := 0; i < 5; i++ {
		name := fmt.Sprintf("pod-%02d", i)
		var got *corev1.Pod
		// The scheduler writes the pod's status too: retry a conflict.
		must(retry.RetryOnConflict(retry.DefaultRetry, func() error {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			p.Labels["kpath-e2e-updated"] = "yes"
			got, err = pods.Update(ctx, p, metav1.UpdateOptions{})
			return err
		}))
		exp = append(exp, expected{"update", "PUT", podKey(name), rv(got)})
	}
	for i := 5; i < 15; i++ {
		name := fmt.Sprintf("pod-%02d", i)
		p, err := pods.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
		must(err)
		exp = append(exp, expected{"patch", "PATCH", podKey(name), rv(p)})
	}
	zero := int64(0)
	for i := 0; i < 15; i++ {
		name := fmt.Sprintf("pod-%02d", i)
		err := pods.Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if apierrors.IsNotFound(err) {
			t.Fatalf("pod %s vanished before the test deleted it", name)
		}
		must(err)
		exp = append(exp, expected{"delete", "DELETE", podKey(name), 0})
	}
	return exp
}

// find returns the traces that report w.
func find(traces map[string]*trace, w expected) []*trace {
	var out []*trace
	for _, tr := range traces {
		r := tr.root()
		if r == nil {
			continue
		}
		a := attrs(r)
		if a["kpath.key"] != w.key {
			continue
		}
		if w.rev != 0 && a["kpath.revision"] != w.rev {
			continue
		}
		if w.rev == 0 {
			// A DELETE may write twice (a graceful deletion first records
			// deletionTimestamp): its object-removing write is the one whose
			// storage write is an etcd delete.
			if a["http.request.method"] != w.method {
				continue
			}
			if sw := tr.stage("storage-write"); len(sw) != 1 || attrs(sw[0])["kpath.probe"] != "apiserver.etcd.delete" {
				continue
			}
		}
		out = append(out, tr)
	}
	return out
}

// describe lists traces' spans, one a line: stage, component, name,
// times relative to the trace's first span, parent.
func describe(trs ...*trace) string {
	var b strings.Builder
	for _, tr := range trs {
		var t0 uint64
		for _, s := range tr.spans {
			if t0 == 0 || s.StartTimeUnixNano < t0 {
				t0 = s.StartTimeUnixNano
			}
		}
		fmt.Fprintf(&b, "\n  trace %s:", tr.id)
		for _, s := range tr.spans {
			a := attrs(s)
			fmt.Fprintf(&b, "\n    %v/%v %q +%dµs..+%dµs span %x parent %x key %v rev %v", a["kpath.component"], a["kpath.stage"], s.Name,
				(s.StartTimeUnixNano-t0)/1000, (s.EndTimeUnixNano-t0)/1000, s.SpanId, s.ParentSpanId, a["kpath.key"], a["kpath.revision"])
		}
	}
	return b.String()
}

// check says what is wrong with the one trace of w.
func check(tr *trace, w expected) error {
	root := tr.root()
	if root == nil {
		return tr.checkShape()
	}
	if a := attrs(root); a["kpath.stage"] != "request" || a["http.request.method"] != w.method || a["kpath.component"] != "kube-apiserver" {
		return fmt.Errorf("root %q is not the %s request: %v", root.Name, w.method, a)
	}
	return tr.checkWriteChain(w.key, w.rev)
}

func TestWritesAreTracedThroughAPIServerAndEtcd(t *testing.T) {
	se := begin(t, 5*time.Minute, "kpath-e2e-writes-")
	l, ctx, rcv, ns := se.l, se.ctx, se.rcv, se.ns

	// Pods of earlier tests being deleted would add their writes and reads
	// to this run's hits; the trace count goes as each trace goes, the hit
	// counters every 2 s: both once they caught up.
	before := se.quietCounters(t)
	exp := writes(ctx, t, l, ns)
	if len(exp) != 100 {
		t.Fatalf("made %d writes, want 100", len(exp))
	}

	var traces map[string]*trace
	var missing []expected
	err := waitFor(ctx, "a trace for every write", func() (bool, error) {
		traces = groupTraces(rcv.Spans())
		missing = missing[:0]
		for _, w := range exp {
			if len(find(traces, w)) == 0 {
				missing = append(missing, w)
			}
		}
		return len(missing) == 0, nil
	})
	// A duplicate would come now, and the hit counters catch up.
	after := se.settledCounters(t)
	traces = groupTraces(rcv.Spans())

	// Failures are reported last, each with its trace, after the counters
	// that explain them: a CI log keeps the end of the output.
	byOp := map[string]int{}
	var failures []string
	if err != nil {
		failures = append(failures, fmt.Sprintf("%v: %d of %d writes have no trace, e.g. %+v", err, len(missing), len(exp), missing[:min(5, len(missing))]))
	}
	for _, w := range exp {
		got := find(traces, w)
		if len(got) != 1 {
			if len(got) > 1 {
				failures = append(failures, fmt.Sprintf("%s %s rev %d: %d traces, want exactly 1%s", w.op, w.key, w.rev, len(got), describe(got...)))
			}
			continue
		}
		if err := check(got[0], w); err != nil {
			failures = append(failures, fmt.Sprintf("%s %s rev %d: %v%s", w.op, w.key, w.rev, err, describe(got[0])))
			continue
		}
		byOp[w.op]++
	}
	defer func() {
		for _, f := range failures {
			t.Error(f)
		}
	}()

	// Hits per write: every write the apiserver made in the meantime (its
	// own leases and the controllers' too) was traced, so divide by traces.
	d := func(name string, kv ...string) float64 { return after.sum(name, kv...) - before.sum(name, kv...) }
	tracesMade := d("kpath_traces_total")
	apiHits := d("kpath_probe_hits_total", "component", "kube-apiserver")
	etcdHits := d("kpath_probe_hits_total", "component", "etcd")
	ringDrops := after.sum("kpath_events_dropped_total", "reason", "ringbuf_full")
	var ops []string
	for op, n := range byOp {
		ops = append(ops, fmt.Sprintf("%s=%d", op, n))
	}
	sort.Strings(ops)
	t.Logf("flavour %s: %d writes, %d with exactly one correct trace (%s); %.0f traces in all during the run",
		l.flavour, len(exp), byOp["create"]+byOp["update"]+byOp["patch"]+byOp["delete"], strings.Join(ops, " "), tracesMade)
	if tracesMade > 0 {
		t.Logf("probe hits per write: kube-apiserver %.2f, etcd %.2f; ring-buffer drops %.0f", apiHits/tracesMade, etcdHits/tracesMade, ringDrops)
	}
	if ringDrops != 0 {
		t.Errorf("ring buffer dropped %.0f events, want 0", ringDrops)
	}
	// Every other reason the agent counts, for the record: requests that
	// wrote nothing and conflicts are normal; lost pieces are not.
	var drops []string
	for _, smp := range after {
		if smp.name == "kpath_events_dropped_total" && smp.value > 0 {
			drops = append(drops, fmt.Sprintf("%s=%.0f", smp.labels["reason"], smp.value))
		}
	}
	sort.Strings(drops)
	t.Logf("agent's counted drops since it started: %s", strings.Join(drops, " "))
	var unjoined []string
	for _, smp := range after {
		if smp.name == "kpath_events_unjoined_total" && smp.value > 0 && smp.labels["reason"] != "filtered" {
			unjoined = append(unjoined, fmt.Sprintf("%s/%s=%.0f", smp.labels["probe"], smp.labels["reason"], smp.value))
		}
	}
	sort.Strings(unjoined)
	t.Logf("events that joined nothing: %s", strings.Join(unjoined, " "))
	// A trace store lists the components as services: each span is under
	// its own component's resource.
	services := map[string]int{}
	for _, rs := range rcv.ResourceSpans() {
		var service string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				if c := attrs(sp)["kpath.component"]; c != service {
					t.Errorf("span %q of %s is under service.name %q", sp.GetName(), c, service)
				}
				services[service]++
			}
		}
	}
	if services["kube-apiserver"] == 0 || services["etcd"] == 0 {
		t.Errorf("spans by service.name: %v, want kube-apiserver and etcd among them", services)
	}
	// The budget (4 hits in kube-apiserver for a plain write) is a property
	// of the catalogue, checked by probes.TestWriteHitBudget; this ratio
	// also carries the cluster's background requests that write nothing
	// (2 hits each, no trace), so it is reported, not asserted.
}
