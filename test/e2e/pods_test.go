package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/kpath/kpath/correlate"
	"github.com/kpath/kpath/export/otlptest"
)

func runningPod(name string) *corev1.Pod {
	no := false
	zero := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "kpath-e2e-pods"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &zero,
			Containers:                    []corev1.Container{{Name: "app", Image: "kpath.local/workload:v1", ImagePullPolicy: corev1.PullNever}},
		},
	}
}

// podTrace is the startup trace of one pod as received.
type podTrace struct {
	*trace
	stages map[string]*tracepb.Span // the partition
}

func (l *lab) podTraces(rcv *otlptest.Receiver, pods []*corev1.Pod) map[string]*podTrace {
	traces := groupTraces(rcv.Spans())
	out := map[string]*podTrace{}
	for _, p := range pods {
		id := correlate.PodTraceID(string(p.UID))
		tr, ok := traces[fmt.Sprintf("%x", id[:])]
		if !ok {
			continue
		}
		pt := &podTrace{trace: tr, stages: map[string]*tracepb.Span{}}
		for _, s := range tr.spans {
			if attrs(s)["kpath.partition"] == true {
				pt.stages[attrs(s)["kpath.stage"].(string)] = s
			}
		}
		out[string(p.UID)] = pt
	}
	return out
}

// complete says whether the trace holds the whole partition.
func (pt *podTrace) complete() bool {
	r := pt.root()
	return r != nil && attrs(r)["kpath.complete"] == true && len(pt.stages) == len(correlate.PodStages)
}

// checkPartition: the stages follow each other in causal order and add up
// to the time from the create request to the status write's commit.
func (pt *podTrace) checkPartition() error {
	var prev *tracepb.Span
	var sum uint64
	for _, st := range correlate.PodStages {
		s, ok := pt.stages[st]
		if !ok {
			return fmt.Errorf("no %s stage", st)
		}
		if prev != nil && s.StartTimeUnixNano != prev.EndTimeUnixNano {
			return fmt.Errorf("stage %s starts at %d, %s ended at %d", st, s.StartTimeUnixNano, prev.Name, prev.EndTimeUnixNano)
		}
		sum += s.EndTimeUnixNano - s.StartTimeUnixNano
		prev = s
	}
	// The interval, from the writes' own spans: the create's request start
	// and the status write's apply (the key written: watchers see it).
	var createStart, statusEnd uint64
	for _, s := range pt.spans {
		a := attrs(s)
		if a["kpath.stage"] == "request" && a["http.request.method"] == "POST" && strings.HasSuffix(fmt.Sprint(a["url.path"]), "/pods") {
			createStart = s.StartTimeUnixNano
		}
	}
	for _, s := range pt.spans {
		a := attrs(s)
		if a["kpath.stage"] == "apply" && s.StartTimeUnixNano > statusEnd {
			statusEnd = s.StartTimeUnixNano
		}
	}
	if createStart == 0 || statusEnd <= createStart {
		return fmt.Errorf("no create request or status write in the trace")
	}
	total := statusEnd - createStart
	if diff := float64(sum) - float64(total); diff > 0.05*float64(total) || -diff > 0.05*float64(total) {
		return fmt.Errorf("stages add up to %v, create→status written took %v", time.Duration(sum), time.Duration(total))
	}
	return nil
}

func (pt *podTrace) durations() map[string]time.Duration {
	m := map[string]time.Duration{}
	for st, s := range pt.stages {
		m[st] = time.Duration(s.EndTimeUnixNano - s.StartTimeUnixNano)
	}
	return m
}

// containerStarts asks containerd over CRI when each container of the lab's
// pods started, by pod UID.
func (l *lab) containerStarts(ctx context.Context, t *testing.T) map[string]time.Time {
	t.Helper()
	sock := l.env("KPATH_LAB_CONTAINERD_SOCK")
	if sock == "" {
		t.Fatal("KPATH_LAB_CONTAINERD_SOCK missing from the lab env file")
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := cri.NewRuntimeServiceClient(conn)
	list, err := rt.ListContainers(ctx, &cri.ListContainersRequest{})
	if err != nil {
		t.Fatalf("CRI ListContainers on %s: %v", sock, err)
	}
	out := map[string]time.Time{}
	for _, c := range list.Containers {
		st, err := rt.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: c.Id})
		if err != nil || st.Status.StartedAt == 0 {
			continue
		}
		out[c.Labels["io.kubernetes.pod.uid"]] = time.Unix(0, st.Status.StartedAt)
	}
	return out
}

func (l *lab) env(key string) string {
	b, _ := os.ReadFile(filepath.Join(l.dir, "env"))
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimPrefix(line, "export "), key+"="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

func (l *lab) pid(t *testing.T, component string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, "run", component+".pid"))
	if err != nil {
		t.Fatalf("pid of %s: %v", component, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func waitRunning(ctx context.Context, l *lab, ns string, n int) ([]*corev1.Pod, error) {
	var pods []*corev1.Pod
	err := waitFor(ctx, fmt.Sprintf("%d pods Running", n), func() (bool, error) {
		list, err := l.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		pods = pods[:0]
		for i := range list.Items {
			if list.Items[i].Status.Phase == corev1.PodRunning {
				pods = append(pods, &list.Items[i])
			}
		}
		return len(pods) >= n, nil
	})
	return pods, err
}

func TestPodsAreTracedFromCreateToRunning(t *testing.T) {
	se := begin(t, 6*time.Minute, "kpath-e2e-pods-")
	l, ctx, rcv, ns := se.l, se.ctx, se.rcv, se.ns
	before := se.quietCounters(t)
	from := time.Now()

	// 50 pods at 5 a second.
	const n = 50
	tick := time.NewTicker(200 * time.Millisecond)
	for i := 0; i < n; i++ {
		<-tick.C
		if _, err := l.client.CoreV1().Pods(ns).Create(ctx, runningPod(fmt.Sprintf("p-%02d", i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tick.Stop()
	pods, err := waitRunning(ctx, l, ns, n)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]*podTrace
	err = waitFor(ctx, "a complete trace for every Running pod", func() (bool, error) {
		got = l.podTraces(rcv, pods)
		for _, p := range pods {
			if pt, ok := got[string(p.UID)]; !ok || !pt.complete() {
				return false, nil
			}
		}
		return true, nil
	})
	after := se.settledCounters(t)
	to := time.Now()
	if err != nil {
		missing := 0
		for _, p := range pods {
			if pt, ok := got[string(p.UID)]; !ok || !pt.complete() {
				missing++
				if missing <= 3 {
					if ok {
						var names []string
						for _, s := range pt.spans {
							names = append(names, fmt.Sprintf("%s[%v/%v]", s.Name, attrs(s)["kpath.component"], attrs(s)["kpath.stage"]))
						}
						t.Logf("pod %s (uid %s): incomplete trace, missing %v, stages %v, spans %s", p.Name, p.UID, attrs(pt.root())["kpath.missing"], pt.durations(), strings.Join(names, ", "))
						for _, tr := range groupTraces(rcv.Spans()) {
							if r := tr.root(); r != nil && attrs(r)["kpath.key"] == "/registry/pods/"+ns+"/"+p.Name {
								for _, s := range tr.spans {
									a := attrs(s)
									t.Logf("  trace %s: %s %v rev %v ok %v [%d,%d]", tr.id[:8], s.Name, a["kpath.stage"], a["kpath.revision"], a["kpath.succeeded"], s.StartTimeUnixNano%1e9, s.EndTimeUnixNano%1e9)
								}
							}
						}
					} else {
						t.Logf("pod %s: no trace", p.Name)
					}
				}
			}
		}
		for _, s := range after {
			if s.name == "kpath_events_dropped_total" && s.value > 0 {
				t.Logf("agent dropped %v events: %v", s.value, s.labels)
			}
		}
		t.Fatalf("%v: %d of %d Running pods lack a complete trace", err, missing, len(pods))
	}

	starts := l.containerStarts(ctx, t)
	sums := map[string]time.Duration{}
	var apart, replies []time.Duration
	for _, p := range pods {
		pt := got[string(p.UID)]
		if err := pt.checkShape(); err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
		}
		if err := pt.checkPartition(); err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
		}
		if a := attrs(pt.root()); a["k8s.node.name"] != p.Spec.NodeName || a["k8s.pod.uid"] != string(p.UID) || a["k8s.pod.name"] != p.Name || a["k8s.namespace.name"] != ns {
			t.Errorf("pod %s: root attributes %v, want node %s, uid %s", p.Name, a, p.Spec.NodeName, p.UID)
		}
		for st, d := range pt.durations() {
			sums[st] += d
		}
		lags := map[any]bool{}
		for _, s := range pt.stage(correlate.PodWatchLag) {
			lags[attrs(s)["kpath.component"]] = true
		}
		if !lags["kube-scheduler"] || !lags["kubelet"] {
			t.Errorf("pod %s: watch lag for %v, want kube-scheduler and kubelet", p.Name, lags)
		}
		// The container start kpath reports (the end of the container-start
		// stage: the runtime's StartedAt as the kubelet's status holds it)
		// against containerd's own StartedAt, asked over CRI.
		d, err := stageEndApart(pt, starts[string(p.UID)])
		if err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
			continue
		}
		if d > 10*time.Millisecond {
			t.Errorf("pod %s: container started %v apart from containerd's StartedAt, want ≤ 10ms", p.Name, d)
		}
		apart = append(apart, d)
		// The probes' own clock against containerd's: the kubelet entered
		// its container start before containerd started the container, and
		// its CRI call returned after. (How long after is containerd's
		// reply, which persists the container's status first: logged below.)
		if err := bracketsStart(pt, starts[string(p.UID)]); err != nil {
			t.Errorf("pod %s: %v", p.Name, err)
		}
		if r := pt.stage("cri-start"); len(r) == 1 {
			replies = append(replies, time.Duration(r[0].EndTimeUnixNano-r[0].StartTimeUnixNano))
		}
	}
	sortDurations(apart)
	sortDurations(replies)
	if len(apart) > 0 {
		t.Logf("container started, kpath (the runtime's StartedAt in the kubelet's status, read by the probe) vs containerd's StartedAt over CRI, under 5 pods/s on %d pods: p50 %v, max %v",
			len(apart), apart[len(apart)/2], apart[len(apart)-1])
	}
	if len(replies) > 0 {
		t.Logf("then containerd's CRI reply reached the kubelet after: p50 %v, p90 %v, max %v",
			replies[len(replies)/2], replies[len(replies)*9/10], replies[len(replies)-1])
	}
	var lines []string
	for _, st := range correlate.PodStages {
		lines = append(lines, fmt.Sprintf("%s=%v", st, (sums[st]/time.Duration(len(pods))).Round(time.Microsecond)))
	}
	t.Logf("mean stage per pod over %d pods: %s", len(pods), strings.Join(lines, " "))

	h := podHits(after, before, from, to, rcv, ns, n)
	t.Logf("probe hits per pod lifecycle: %.1f (≤ 40 with v1.35's 4 writes of a pod) = pod rows %.1f + %.1f writes of the pod × %.1f write-path hits",
		h.lifecycle(), h.podRows, h.podWrites, h.perWrite)
	t.Logf("beside it, per pod: %.1f writes of Events about it (objects of their own) cost %.1f more, and reads %.1f (one entry hit a request, one an etcd RPC); "+
		"all hits in the run %.1f per pod (%s), over %.0f writes in all",
		h.eventWrites, h.eventWrites*h.perWrite, h.readHits, h.all, h.byComponent, h.writes)
	// kpath's budget is per thing it follows: how many times the cluster
	// writes a pod is the cluster's (v1.35: 4; v1.37 writes its status once
	// more, and its kubelet sets it once more), not kpath's cost.
	const podRowBudget, perWriteBudget = 12, 7.5
	if h.podRows > podRowBudget || h.perWrite > perWriteBudget {
		t.Errorf("a pod's lifecycle costs %.1f probe hits: %.1f in the pod's own rows (budget %d: 10 for one container and the kubelet's status after a sync) and %.1f a write (budget %.1f)",
			h.lifecycle(), h.podRows, podRowBudget, h.perWrite, perWriteBudget)
	}
	t.Logf("ring-buffer drops: %.0f", after.sum("kpath_events_dropped_total", "reason", "ringbuf_full"))
	if d := after.sum("kpath_events_dropped_total", "reason", "ringbuf_full"); d != 0 {
		t.Errorf("ring buffer dropped %.0f events", d)
	}
}

// hitCost is where a pod's probe hits went, per pod.
type hitCost struct {
	podRows     float64 // rows that follow the pod (kube-scheduler, kubelet)
	podWrites   float64 // writes of the pod object
	eventWrites float64 // writes of Events in its namespace
	perWrite    float64 // write-path hits (kube-apiserver + etcd) per write, all writes of the run
	writes      float64 // every write of the run, background included
	// readHits are the hits of write-path rows that reads made (their
	// requests end at MonitorRequest, their etcd RPCs at etcd's stats; the
	// BPF program filters them out, counted): not a write's cost.
	readHits    float64
	all         float64
	byComponent string
}

func (h hitCost) lifecycle() float64 { return h.podRows + h.podWrites*h.perWrite }

// podHits splits the probe hits of a run of n pods in namespace ns: the
// hit counters' increase by component between the scrapes before and
// after, and the writes made between from and to, counted from the write
// traces received (one storage-write span per write).
func podHits(after, before metrics, from, to time.Time, rcv *otlptest.Receiver, ns string, n float64) hitCost {
	byComp := map[string]float64{}
	for _, s := range after {
		if s.name == "kpath_probe_hits_total" {
			byComp[s.labels["component"]] += s.value
		}
	}
	for _, s := range before {
		if s.name == "kpath_probe_hits_total" {
			byComp[s.labels["component"]] -= s.value
		}
	}
	var h hitCost
	reads := func(ms metrics, sign float64) {
		for _, s := range ms {
			if s.name != "kpath_events_unjoined_total" {
				continue
			}
			p, r := s.labels["probe"], s.labels["reason"]
			if (p == "apiserver.request.end" || p == "etcd.request.rpc") && r == "filtered" {
				h.readHits += sign * s.value
			}
		}
	}
	reads(after, 1)
	reads(before, -1)
	for _, s := range rcv.Spans() {
		a := attrs(s)
		if a["kpath.stage"] != "storage-write" || a["kpath.write_trace"] != nil {
			continue // a write's copy grafted into a pod trace
		}
		if at := time.Unix(0, int64(s.StartTimeUnixNano)); at.Before(from) || at.After(to) {
			continue // outside the scrapes' window
		}
		h.writes++
		key, _ := a["kpath.key"].(string)
		switch {
		case strings.HasPrefix(key, "/registry/pods/"+ns+"/"):
			h.podWrites++
		case strings.HasPrefix(key, "/registry/events/"+ns+"/"):
			h.eventWrites++
		}
	}
	var per []string
	for c, v := range byComp {
		h.all += v
		per = append(per, fmt.Sprintf("%s %.1f", c, v/n))
	}
	sort.Strings(per)
	h.byComponent = strings.Join(per, ", ")
	if h.writes > 0 {
		h.perWrite = (byComp["kube-apiserver"] + byComp["etcd"] - h.readHits) / h.writes
	}
	h.podRows = (byComp["kube-scheduler"] + byComp["kubelet"] + byComp["kube-controller-manager"]) / n
	h.podWrites /= n
	h.eventWrites /= n
	h.all /= n
	h.readHits /= n
	return h
}

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

// bracketsStart checks the uprobe clock against containerd's: the span of
// the pod's container start (the kubelet's startContainer entry to its CRI
// StartContainer's return, both timed by probes) holds containerd's own
// StartedAt.
func bracketsStart(pt *podTrace, started time.Time) error {
	cs := pt.stage("start-container")
	if len(cs) != 1 || started.IsZero() {
		return fmt.Errorf("%d container start spans; containerd start known: %v", len(cs), !started.IsZero())
	}
	from, to := time.Unix(0, int64(cs[0].StartTimeUnixNano)), time.Unix(0, int64(cs[0].EndTimeUnixNano))
	if started.Before(from) || started.After(to) {
		return fmt.Errorf("containerd's StartedAt %v is outside the kubelet's container start %v–%v (probe clock)", started, from, to)
	}
	return nil
}

// stageEndApart is how far the end of a pod trace's container-start stage
// (kpath's time for the last container's start) is from containerd's
// StartedAt of that container; the stage must say it came from the runtime.
func stageEndApart(pt *podTrace, started time.Time) (time.Duration, error) {
	cs := pt.stages[correlate.PodContainerStart]
	if cs == nil || started.IsZero() {
		return 0, fmt.Errorf("container-start stage %v; containerd start known: %v", cs != nil, !started.IsZero())
	}
	if by := attrs(cs)["kpath.started_by"]; by != "runtime" {
		return 0, fmt.Errorf("container-start stage ends at %v, not at the runtime's StartedAt", by)
	}
	d := time.Unix(0, int64(cs.EndTimeUnixNano)).Sub(started)
	if d < 0 {
		d = -d
	}
	return d, nil
}

// waitQuiet waits until no namespace or pod is terminating, and the node
// runs no sandbox of a pod the API no longer has: pods being torn down (an
// earlier test's namespace; with grace 0 they leave the API before the
// kubelet is done) keep the kubelet, CNI and CPUs busy.
func waitQuiet(ctx context.Context, t *testing.T, l *lab) {
	t.Helper()
	defer l.waitSandboxesGone(ctx, t)
	err := waitFor(ctx, "no pod or namespace terminating", func() (bool, error) {
		nss, err := l.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, n := range nss.Items {
			if n.Status.Phase == corev1.NamespaceTerminating {
				return false, nil
			}
		}
		list, err := l.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, p := range list.Items {
			if p.DeletionTimestamp != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (l *lab) waitSandboxesGone(ctx context.Context, t *testing.T) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+l.env("KPATH_LAB_CONTAINERD_SOCK"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := cri.NewRuntimeServiceClient(conn)
	err = waitFor(ctx, "the node to tear down deleted pods", func() (bool, error) {
		pods, err := l.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		live := map[string]bool{}
		for _, p := range pods.Items {
			live[string(p.UID)] = true
		}
		sbs, err := rt.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{Filter: &cri.PodSandboxFilter{State: &cri.PodSandboxStateValue{State: cri.PodSandboxState_SANDBOX_READY}}})
		if err != nil {
			return false, fmt.Errorf("CRI ListPodSandbox: %w", err)
		}
		for _, sb := range sbs.Items {
			if !live[sb.Metadata.Uid] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// stopFor stops a process, runs during, keeps it stopped d longer, and
// always lets it go again.
func stopFor(t *testing.T, pid int, d time.Duration, during func()) {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGCONT)
	for i := 0; ; i++ {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:])); len(f) > 0 && f[0] == "T" {
			break
		}
		if i == 100 {
			t.Fatalf("pid %d did not stop", pid)
		}
		time.Sleep(time.Millisecond)
	}
	during()
	time.Sleep(d)
}

// TestStoppedComponentDelayIsAttributed stops kube-scheduler, then the
// kubelet, then etcd, for 2 s while a pod is on its way and checks the delay
// lands in that component's stage and nowhere else.
func TestStoppedComponentDelayIsAttributed(t *testing.T) {
	se := begin(t, 4*time.Minute, "kpath-e2e-stop-")
	l, ctx, rcv, ns := se.l, se.ctx, se.rcv, se.ns
	waitQuiet(ctx, t, l)

	for _, c := range []struct{ component, stage, pod string }{
		{"kube-scheduler", correlate.PodSchedulingWait, "stop-scheduler"},
		{"kubelet", correlate.PodKubeletWatch, "stop-kubelet"},
		// The create's txn waits for etcd: charged to etcd, never to the
		// apiserver that waits.
		{"etcd", correlate.PodEtcdWait, "stop-etcd"},
	} {
		t.Run(c.component, func(t *testing.T) {
			created := make(chan error, 1)
			stopFor(t, l.pid(t, c.component), 2*time.Second, func() {
				if c.component == "etcd" {
					// The create waits for etcd: it returns after the stop.
					go func() {
						_, err := l.client.CoreV1().Pods(ns).Create(ctx, runningPod(c.pod), metav1.CreateOptions{})
						created <- err
					}()
					return
				}
				p, err := l.client.CoreV1().Pods(ns).Create(ctx, runningPod(c.pod), metav1.CreateOptions{})
				created <- err
				if err != nil {
					t.Fatal(err)
				}
				if c.component == "kubelet" {
					// Let the scheduler bind it: the kubelet's stop then
					// counts from the binding.
					waitFor(ctx, "binding", func() (bool, error) {
						got, err := l.client.CoreV1().Pods(ns).Get(ctx, p.Name, metav1.GetOptions{})
						return err == nil && got.Spec.NodeName != "", nil
					})
				}
			})
			if err := <-created; err != nil {
				t.Fatal(err)
			}
			var pt *podTrace
			err := waitFor(ctx, "the pod's complete trace", func() (bool, error) {
				got, err := l.client.CoreV1().Pods(ns).Get(ctx, c.pod, metav1.GetOptions{})
				if err != nil {
					return false, nil
				}
				pt = l.podTraces(rcv, []*corev1.Pod{got})[string(got.UID)]
				return pt != nil && pt.complete(), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			d := pt.durations()
			t.Logf("stages with %s stopped 2s: %v", c.component, d)
			got := d[c.stage]
			if c.component == "etcd" {
				// The create was sent after the stop began: what the request
				// did before its txn (its admission, and up to 10 ms to reach
				// the apiserver) was inside the stop, not waiting for etcd.
				got += d[correlate.PodAdmission] + 10*time.Millisecond
			}
			if got < 2*time.Second {
				t.Errorf("%s took %v, want ≥ 2s", c.stage, d[c.stage])
			}
			// A stage that got the stop would take ≥ 2 s. Status report is
			// the exception that proves nothing: the kubelet notices a started
			// container at its next PLEG relist (a 1 s timer) and writes the
			// status through its status manager; here it takes 0.6–2.5 s with
			// or without any stop.
			for st, v := range d {
				if st != c.stage && st != correlate.PodStatusReport && v >= 2*time.Second {
					t.Errorf("stage %s took %v: the stop leaked into it", st, v)
				}
			}
		})
	}
}
