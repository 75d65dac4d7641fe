package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kpath/kpath/correlate"
	"github.com/kpath/kpath/export/otlptest"
)

// TestDeploymentPodsNameTheirCreator: the Deployment `kubectl create
// deployment web --replicas=3` makes (its pod template as the other pod
// tests'). Each pod's trace names kube-controller-manager's replicaset
// controller as its creator and links to the sync that created it, the
// ReplicaSet's write that sync acted on, the Deployment controller's sync
// that made that write and the Deployment's create; each sync is in the
// trace of the write it acted on.
func TestDeploymentPodsNameTheirCreator(t *testing.T) {
	se := begin(t, 4*time.Minute, "kpath-e2e-deploy-")
	l, ctx, rcv, ns := se.l, se.ctx, se.rcv, se.ns
	before := se.quietCounters(t)

	replicas := int32(3)
	labels := map[string]string{"app": "web"}
	tmpl := runningPod("")
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: tmpl.Spec}},
	}
	if _, err := l.client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods, err := waitRunning(ctx, l, ns, int(replicas))
	if err != nil {
		t.Fatal(err)
	}
	rsl, err := l.client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(rsl.Items) != 1 {
		t.Fatalf("ReplicaSets of the Deployment: %v (%v)", rsl, err)
	}
	rs := rsl.Items[0].Name
	rsKey, dKey := "/registry/replicasets/"+ns+"/"+rs, "/registry/deployments/"+ns+"/web"

	wants := []linkWant{
		{kind: correlate.LinkCreator, name: "sync replicaset " + ns + "/" + rs},
		{kind: correlate.LinkOwnerWrite, key: rsKey},
		{kind: correlate.LinkOwnerCreator, name: "sync deployment " + ns + "/web"},
		{kind: correlate.LinkOwnerOwnerWrite, key: dKey, method: "POST"},
	}
	waitCreators(ctx, t, l, rcv, pods, func(*corev1.Pod) (string, []linkWant) { return "replicaset", wants })
	after := se.settledCounters(t)
	var hits float64
	for _, row := range []string{"replicaset.sync", "replicaset.sync.done", "replicaset.object", "deployment.sync", "deployment.sync.done", "deployment.object"} {
		hits += after.sum("kpath_probe_hits_total", "probe", "controller-manager."+row) - before.sum("kpath_probe_hits_total", "probe", "controller-manager."+row)
	}
	t.Logf("kube-controller-manager sync hits for a Deployment of %d pods: %.0f", replicas, hits)
	if n := after.sum("kpath_events_dropped_total", "reason", "pod_creator_unknown"); n != 0 {
		t.Errorf("%v pods counted without a creator", n)
	}
}

// doubleAttr is a span's double attribute.
func doubleAttr(s *tracepb.Span, key string) (float64, bool) {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			if d, ok := kv.Value.Value.(*commonpb.AnyValue_DoubleValue); ok {
				return d.DoubleValue, true
			}
		}
	}
	return 0, false
}

// linkWant is what a link of a pod's root must point at, among the spans
// received: a span of that name, or the root of a write of that key (made
// by that method).
type linkWant struct {
	kind, name, key, method string
}

// checkCreator says what is wrong with a pod's root as the pod of a
// controller's sync: kpath.creator, the time after its owner's write, and
// its links in order.
func checkCreator(spans map[string]*tracepb.Span, root *tracepb.Span, controller string, wants []linkWant) error {
	ra := attrs(root)
	if want := "kube-controller-manager/" + controller; ra["kpath.creator"] != want {
		return fmt.Errorf("kpath.creator = %v, want %s", ra["kpath.creator"], want)
	}
	if _, ok := doubleAttr(root, correlate.AttrAfterOwnerWrite); !ok {
		return fmt.Errorf("no %s", correlate.AttrAfterOwnerWrite)
	}
	if len(root.Links) != len(wants) {
		return fmt.Errorf("%d links, want %d", len(root.Links), len(wants))
	}
	for i, w := range wants {
		l := root.Links[i]
		la := map[string]any{}
		for _, kv := range l.Attributes {
			la[kv.Key] = value(kv.Value)
		}
		if la[correlate.AttrLink] != w.kind {
			return fmt.Errorf("link %d is %v, want %s", i, la[correlate.AttrLink], w.kind)
		}
		s, ok := spans[fmt.Sprintf("%x/%x", l.TraceId, l.SpanId)]
		if !ok {
			return fmt.Errorf("link %s: span %x of trace %x not received", w.kind, l.SpanId, l.TraceId)
		}
		sa := attrs(s)
		if w.name != "" && s.Name != w.name {
			return fmt.Errorf("link %s: span %q, want %q", w.kind, s.Name, w.name)
		}
		if w.key != "" && sa["kpath.key"] != w.key {
			return fmt.Errorf("link %s: span %q of key %v, want %s", w.kind, s.Name, sa["kpath.key"], w.key)
		}
		if w.method != "" && !strings.HasPrefix(s.Name, w.method+" ") {
			return fmt.Errorf("link %s: span %q, want the %s that created it", w.kind, s.Name, w.method)
		}
		// A sync is in the trace of the write it acted on, under its root.
		if strings.HasPrefix(s.Name, "sync ") {
			rev, _ := sa["kpath.revision"].(int64)
			tid, rid := correlate.WriteTraceID(rev), correlate.WriteRootID(rev)
			if rev == 0 || string(s.TraceId) != string(tid[:]) || string(s.ParentSpanId) != string(rid[:]) {
				return fmt.Errorf("link %s: sync %q (revision %v) is not under the root of its write's trace", w.kind, s.Name, sa["kpath.revision"])
			}
		}
	}
	return nil
}

// TestWorkloadPodsNameTheirCreator: a Job's, a StatefulSet's and a
// DaemonSet's pod each name their controller's sync as their creator and
// link to it and to their owner's write (the create the test made).
func TestWorkloadPodsNameTheirCreator(t *testing.T) {
	se := begin(t, 4*time.Minute, "kpath-e2e-workloads-")
	l, ctx, rcv, ns := se.l, se.ctx, se.rcv, se.ns
	waitQuiet(ctx, t, l)

	spec := func(app string, restart corev1.RestartPolicy) corev1.PodTemplateSpec {
		p := runningPod("")
		p.Spec.RestartPolicy = restart
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}}, Spec: p.Spec}
	}
	one := int32(1)
	sel := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	if _, err := l.client.BatchV1().Jobs(ns).Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "batch"},
		Spec: batchv1.JobSpec{Template: spec("batch", corev1.RestartPolicyNever)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.client.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: &one, ServiceName: "db", Selector: sel("db"), Template: spec("db", corev1.RestartPolicyAlways)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.client.AppsV1().DaemonSets(ns).Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "node-agent"},
		Spec: appsv1.DaemonSetSpec{Selector: sel("node-agent"), Template: spec("node-agent", corev1.RestartPolicyAlways)}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods, err := waitRunning(ctx, l, ns, 3)
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]struct{ controller, key string }{
		"Job":         {"job", "/registry/jobs/" + ns + "/batch"},
		"StatefulSet": {"statefulset", "/registry/statefulsets/" + ns + "/db"},
		"DaemonSet":   {"daemonset", "/registry/daemonsets/" + ns + "/node-agent"},
	}
	waitCreators(ctx, t, l, rcv, pods, func(p *corev1.Pod) (string, []linkWant) {
		ref := metav1.GetControllerOf(p)
		if ref == nil {
			t.Fatalf("pod %s has no controller", p.Name)
		}
		o := owners[ref.Kind]
		return o.controller, []linkWant{{kind: correlate.LinkCreator, name: "sync " + o.controller + " " + ns + "/" + ref.Name}, {kind: correlate.LinkOwnerWrite, key: o.key}}
	})
}

// waitCreators waits until each pod's trace names its creator and links as
// want says, and logs how long after its owner's write each was created.
func waitCreators(ctx context.Context, t *testing.T, l *lab, rcv *otlptest.Receiver, pods []*corev1.Pod, want func(*corev1.Pod) (string, []linkWant)) {
	t.Helper()
	var last error
	err := waitFor(ctx, "every pod's trace naming its creator", func() (bool, error) {
		spans := map[string]*tracepb.Span{}
		for _, s := range rcv.Spans() {
			spans[fmt.Sprintf("%x/%x", s.TraceId, s.SpanId)] = s
		}
		traces := l.podTraces(rcv, pods)
		for _, p := range pods {
			pt, ok := traces[string(p.UID)]
			if !ok || pt.root() == nil {
				last = fmt.Errorf("pod %s: no trace root", p.Name)
				return false, nil
			}
			controller, links := want(p)
			if last = checkCreator(spans, pt.root(), controller, links); last != nil {
				last = fmt.Errorf("pod %s: %w", p.Name, last)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("%v: %v", err, last)
	}
	traces := l.podTraces(rcv, pods)
	for _, p := range pods {
		root := traces[string(p.UID)].root()
		ms, _ := doubleAttr(root, correlate.AttrAfterOwnerWrite)
		t.Logf("pod %s: created by %v, %.1f ms after its owner's write", p.Name, attrs(root)["kpath.creator"], ms)
	}
}
