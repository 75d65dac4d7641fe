package probes

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRevText(t *testing.T) {
	word := func(s string) uint64 {
		var w uint64
		for i := len(s) - 1; i >= 0; i-- {
			w = w<<8 | uint64(s[i])
		}
		return w
	}
	for _, c := range []struct {
		text string
		n    uint64 // length to claim (0: len(text))
		want int64
	}{
		{"1", 0, 1}, {"12345678", 0, 12345678}, {"123456789", 0, 123456789},
		{"1234567890123456", 0, 1234567890123456},
		{"12345abc", 5, 12345}, // bytes after the string's length are ignored
		{"12x4", 0, 0}, {"", 0, 0}, {"12345678901234567", 17, 0},
	} {
		n := c.n
		if n == 0 {
			n = uint64(len(c.text))
		}
		lo, hi := c.text, ""
		if len(lo) > 8 {
			lo, hi = c.text[:8], c.text[8:min(16, len(c.text))]
		}
		if got := revText([2]uint64{word(lo), word(hi)}, n); got != c.want {
			t.Errorf("revText(%q, %d) = %d, want %d", c.text, n, got, c.want)
		}
	}
}

// podLab is the running lab cluster (test/lab/up.sh) as this test sees it.
type podLab struct {
	kubectl, kubeconfig, image string
	pids                       map[Component]int
}

// needPodLab returns the lab: without KPATH_E2E=1 it skips, saying why;
// with it, a lab that is not up (every component's pidfile naming a live
// process of that component) fails the test.
func needPodLab(t *testing.T) *podLab {
	t.Helper()
	if os.Getenv("KPATH_E2E") != "1" {
		t.Skip("skipped: the pod rows are proven on the lab cluster with KPATH_E2E=1 (make lab-up, then make test)")
	}
	dir := os.Getenv("KPATH_LAB_DIR")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "kpath", "lab")
	}
	env := map[string]string{}
	b, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatalf("KPATH_E2E=1 but no lab at %s (%v): make lab-up", dir, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if k, v, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "export ")), "="); ok {
			env[k] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	l := &podLab{kubectl: env["KUBECTL"], kubeconfig: env["KUBECONFIG"], image: env["KPATH_LAB_WORKLOAD_IMAGE"], pids: map[Component]int{}}
	if l.image == "" {
		l.image = "kpath.local/workload:v1"
	}
	if l.kubectl == "" || l.kubeconfig == "" {
		t.Fatalf("KPATH_E2E=1 but %s/env names no KUBECTL or KUBECONFIG", dir)
	}
	pidDir := env["KPATH_LAB_PID_DIR"]
	if pidDir == "" {
		pidDir = filepath.Join(dir, "run")
	}
	for name, comp := range Targets {
		b, err := os.ReadFile(filepath.Join(pidDir, name+".pid"))
		if err != nil {
			t.Fatalf("KPATH_E2E=1 but lab is not up: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatalf("KPATH_E2E=1 but lab pidfile %s.pid: %v", name, err)
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != name {
			t.Fatalf("KPATH_E2E=1 but lab is not up: pid %d of %s.pid is not %s (%q, %v)", pid, name, name, exe, err)
		}
		l.pids[comp] = pid
	}
	return l
}

func (l *podLab) run(t *testing.T, stdin string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(l.kubectl, append([]string{"--kubeconfig", l.kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// kobj is the part of a Pod (or any object) the test reads.
type kobj struct {
	Metadata struct {
		Name            string `json:"name"`
		Namespace       string `json:"namespace"`
		UID             string `json:"uid"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
	Spec struct {
		NodeName string `json:"nodeName"`
	} `json:"spec"`
	Status struct {
		Phase             string `json:"phase"`
		ContainerStatuses []struct {
			Name  string `json:"name"`
			State struct {
				Running *struct {
					StartedAt time.Time `json:"startedAt"`
				} `json:"running"`
			} `json:"state"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

func (l *podLab) create(t *testing.T, manifest string) kobj {
	t.Helper()
	return l.object(t, manifest, "create", "-f", "-")
}

func (l *podLab) get(t *testing.T, args ...string) kobj {
	t.Helper()
	return l.object(t, "", args...)
}

// object runs kubectl with stdin and args, and decodes the object it prints.
func (l *podLab) object(t *testing.T, stdin string, args ...string) kobj {
	t.Helper()
	out, err := l.run(t, stdin, append(args, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var o kobj
	if err := json.Unmarshal(out, &o); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	return o
}

func hitsByRow(t *testing.T, tr *Tracer) map[string]uint64 {
	t.Helper()
	hs, err := tr.Hits()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]uint64{}
	for _, h := range hs {
		m[h.Row] += h.Hits
	}
	return m
}

// TestPodRowsLive attaches the whole catalogue (detail rows included) to the
// lab's components, creates one pod with two containers in a new namespace,
// waits until it is Running, and checks that every pod row saw this pod with
// the right identity, in causal order, with sane durations. It prints the
// probe hits the pod's lifecycle cost.
func TestPodRowsLive(t *testing.T) {
	needBPF(t)
	lab := needPodLab(t)

	began := time.Now()
	tr, err := NewTracer(Options{Detail: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c := time.Now(); tr.Close(); t.Logf("detached in %v", time.Since(c).Round(time.Millisecond)) }()
	podRowIDs := map[string]*Row{}
	for i := range podRows {
		podRowIDs[podRows[i].ID] = &podRows[i]
	}
	for _, comp := range []Component{Etcd, KubeAPIServer, KubeControllerManager, KubeScheduler, Kubelet} {
		pid := lab.pids[comp]
		p, err := tr.Attach(pid, comp)
		if err != nil {
			t.Fatalf("attach %s pid %d: %v", comp, pid, err)
		}
		for _, r := range p.Rows {
			if r.State != RowAttached {
				t.Errorf("%s pid %d (%s): row %s %s: %v", comp, pid, p.Exe, r.Row.ID, r.State, r.Err)
			}
		}
		n := 0
		for _, r := range p.Rows {
			n += r.Uprobes
		}
		t.Logf("attached %d rows (%d uprobes) to %s pid %d (%s, %s)", p.Attached(), n, comp, pid, p.Exe, p.GoVersion)
	}
	if t.Failed() {
		t.FailNow()
	}

	var (
		mu     sync.Mutex
		events []Event
	)
	ctx, cancel := context.WithCancel(context.Background())
	readDone := make(chan error, 1)
	go func() {
		readDone <- tr.Read(ctx, func(e Event) {
			if e.InFlight {
				return
			}
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		})
	}()
	stopRead := sync.OnceValue(func() error { cancel(); return <-readDone })
	defer stopRead()

	ns := fmt.Sprintf("kpath-pods-%d", time.Now().UnixNano()%1_000_000_000)
	const podName = "lifecycle"
	if _, err := lab.run(t, "", "create", "namespace", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c := time.Now()
		lab.run(t, "", "delete", "namespace", ns, "--wait=false")
		t.Logf("namespace deleted in %v", time.Since(c).Round(time.Millisecond))
	})
	// The namespace makes the controller-manager write a ServiceAccount and
	// a ConfigMap into it: let that pass before counting.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if _, err := lab.run(t, "", "-n", ns, "get", "serviceaccount", "default"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no default ServiceAccount in %s: %v", ns, err)
		}
	}
	t.Logf("%v: attached, namespace %s ready", time.Since(began).Round(time.Millisecond), ns)
	time.Sleep(time.Second)

	// Background: what the cluster costs when nothing happens, for as long
	// as the pod will take (about), to tell the pod's hits from the rest.
	const idle = 4 * time.Second
	h0 := hitsByRow(t, tr)
	time.Sleep(idle)
	h1, t1 := hitsByRow(t, tr), time.Now()

	manifest := fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q,"namespace":%q},
"spec":{"terminationGracePeriodSeconds":1,"containers":[
{"name":"web","image":%q,"imagePullPolicy":"Never"},
{"name":"side","image":%q,"imagePullPolicy":"Never","env":[{"name":"PORT","value":"8081"}]}]}}`, podName, ns, lab.image, lab.image)
	created := lab.create(t, manifest)
	uid, createRV := created.Metadata.UID, mustRV(t, created.Metadata.ResourceVersion)
	if _, err := lab.run(t, "", "-n", ns, "wait", "--for=jsonpath={.status.phase}=Running", "pod/"+podName, "--timeout=120s"); err != nil {
		t.Fatal(err)
	}
	running := lab.get(t, "-n", ns, "get", "pod", podName)
	// Let the last status write and its watch events arrive.
	time.Sleep(2 * time.Second)
	h2, t2 := hitsByRow(t, tr), time.Now()
	t.Logf("%v: pod Running", time.Since(began).Round(time.Millisecond))

	// Failures, to prove the exit captures: a pod no node fits fails its
	// scheduling cycle; a pod whose image is absent (and never pulled) fails
	// the sync around its container start, which never reaches the CRI.
	unsched := lab.create(t, fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"unschedulable","namespace":%q},
"spec":{"nodeSelector":{"kpath.test/none":"x"},"containers":[{"name":"c","image":%q,"imagePullPolicy":"Never"}]}}`, ns, lab.image))
	noImage := lab.create(t, fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"noimage","namespace":%q},
"spec":{"terminationGracePeriodSeconds":1,"containers":[{"name":"absent","image":"kpath.local/absent:v1","imagePullPolicy":"Never"}]}}`, ns))
	failed := func(id, uid string) *Event {
		mu.Lock()
		defer mu.Unlock()
		for i := range events {
			if e := &events[i]; e.Probe == id && e.UID == uid && e.Failed {
				return e
			}
		}
		return nil
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if failed("scheduler.cycle.failed", unsched.Metadata.UID) != nil && failed("kubelet.pod.sync", noImage.Metadata.UID) != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("failures not seen within 60s: unschedulable pod's cycle %v, absent image's sync %v",
				failed("scheduler.cycle.failed", unsched.Metadata.UID), failed("kubelet.pod.sync", noImage.Metadata.UID))
			break
		}
	}
	if c, y := failed("scheduler.cycle.failed", unsched.Metadata.UID), failed("kubelet.pod.sync", noImage.Metadata.UID); c != nil && y != nil {
		t.Logf("%v: failures seen: unschedulable pod's cycle failed; absent image: its sync failed after %v",
			time.Since(began).Round(time.Millisecond), y.Duration())
	}
	if err := stopRead(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	all := slices.Clone(events)
	mu.Unlock()
	for _, e := range all {
		if (e.UID == unsched.Metadata.UID && e.Probe == "scheduler.bind") || (e.UID == uid && e.Failed) {
			t.Errorf("unexpected %s for %s/%s: %+v", e.Probe, e.Namespace, e.Name, e)
		}
	}

	node := running.Spec.NodeName
	key := "/pods/" + ns + "/" + podName
	t.Logf("pod %s/%s uid %s created at rv %d, Running at rv %s on node %s", ns, podName, uid, createRV, running.Metadata.ResourceVersion, node)

	// This pod's events, by row.
	mine := map[string][]Event{}
	var timeline []Event
	for _, e := range all {
		ok := false
		switch {
		case e.Probe == "apiserver.watch.cache":
			ok = e.Key == key
		case podRowIDs[e.Probe] != nil && podRowIDs[e.Probe].Role == Closes && e.UID == "":
			// No pod in its arguments (the end of a CRI call): it belongs
			// to the pod whose span it closes, the last one opened before
			// it with the same join.
			o := openerOf(all, &e)
			ok = o != nil && o.UID == uid
		case podRowIDs[e.Probe] != nil:
			ok = e.UID == uid
		}
		if ok {
			mine[e.Probe] = append(mine[e.Probe], e)
			timeline = append(timeline, e)
		}
	}
	if len(timeline) == 0 {
		t.Fatalf("no event of any pod row for pod %s (%s) among %d events", uid, key, len(all))
	}
	// The spans the catalogue builds from two entry hits, as the agent's
	// correlate.Pairs does: each opening event ends at its closing one.
	for id, evs := range mine {
		if podRowIDs[id].Role != Opens {
			continue
		}
		for i := range evs {
			if c := closerOf(all, &evs[i]); c != nil {
				evs[i] = evs[i].ClosedBy(c)
			}
		}
	}
	slices.SortFunc(timeline, func(a, b Event) int { return a.Start.Compare(b.Start) })
	t0 := timeline[0].Start
	for _, e := range timeline {
		d := ""
		if !e.Point {
			d = e.Duration().Round(time.Microsecond).String()
		}
		t.Logf("  +%-10v %-10s %-36s %-9s ns=%s name=%s uid=%s rev=%d node=%s container=%s failed=%v g=%d",
			e.Start.Sub(t0).Round(time.Microsecond), d, e.Probe, e.Component, e.Namespace, e.Name, e.UID, e.Revision, e.Node, e.Container, e.Failed, e.Goroutine)
	}

	// Identity: every row that captures ns/name/UID got this pod's.
	for id, evs := range mine {
		row := podRowIDs[id]
		for _, e := range evs {
			for _, c := range append(slices.Clone(row.Entry), row.Exit...) {
				var got, want string
				switch c.Field {
				case FieldNamespace:
					got, want = e.Namespace, ns
				case FieldName:
					got, want = e.Name, podName
				case FieldUID:
					got, want = e.UID, uid
				case FieldNode:
					got, want = e.Node, node
				default:
					continue
				}
				if got != want {
					t.Errorf("%s: %s = %q, want %q (%+v)", id, c.Field, got, want, e)
				}
			}
			if e.Truncated {
				t.Errorf("%s: a string was truncated: %+v", id, e)
			}
			if !e.Point && (e.Duration() <= 0 || e.Duration() > time.Minute) {
				t.Errorf("%s: duration %v is not sane", id, e.Duration())
			}
		}
	}
	for _, r := range podRows {
		if r.Component == AnyClientGo {
			continue // no operator runs here: test/e2e's TestOperatorWatchLagIsTraced proves it
		}
		if r.ID == "scheduler.cycle.failed" {
			continue // it fired for the unschedulable pod (above)
		}
		if len(mine[r.ID]) == 0 {
			t.Errorf("row %s (%s, detail %v) did not fire for pod %s", r.ID, r.Component, r.Detail, uid)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	first := func(id string, ok func(Event) bool) Event {
		t.Helper()
		for _, e := range mine[id] {
			if ok == nil || ok(e) {
				return e
			}
		}
		t.Fatalf("no %s event for the pod matches", id)
		return Event{}
	}
	revIs := func(r int64) func(Event) bool { return func(e Event) bool { return e.Revision == r } }
	before := func(a, b string, ta, tb time.Time) {
		t.Helper()
		if ta.After(tb) {
			t.Errorf("%s at %v is after %s at %v", a, ta.Sub(t0), b, tb.Sub(t0))
		}
	}

	// Revisions: the watch cache saw every write of the pod; the informers
	// and the kubelet received revisions the watch cache had.
	watched := map[int64]Event{}
	for _, e := range mine["apiserver.watch.cache"] {
		watched[e.Revision] = e
	}
	finalRV := mustRV(t, running.Metadata.ResourceVersion)
	for _, r := range []int64{createRV, finalRV} {
		if _, ok := watched[r]; !ok {
			t.Errorf("apiserver.watch.cache has no event at rv %d for %s (saw %v)", r, key, keys(watched))
		}
	}
	for _, id := range []string{"scheduler.informer.receive", "controller-manager.informer.receive", "kubelet.pod.received", "kubelet.pod.updated"} {
		for _, e := range mine[id] {
			w, ok := watched[e.Revision]
			if !ok {
				t.Errorf("%s received rv %d, which the watch cache never had (%v)", id, e.Revision, keys(watched))
				continue
			}
			before("apiserver.watch.cache rv "+strconv.FormatInt(e.Revision, 10), id, w.Start, e.Start)
		}
	}

	wcCreate := watched[createRV]
	siCreate := first("scheduler.informer.receive", revIs(createRV))
	first("controller-manager.informer.receive", revIs(createRV))
	queued := first("scheduler.queue.add", nil)
	cycle := first("scheduler.cycle", func(e Event) bool { return !e.Failed })
	bind := first("scheduler.bind", nil)
	received := first("kubelet.pod.received", nil)
	if bind.Failed {
		t.Errorf("scheduler.bind reports a failure: %+v", bind)
	}
	if received.Revision <= createRV {
		t.Errorf("kubelet received rv %d, not later than the create's %d", received.Revision, createRV)
	}
	wcBound := watched[received.Revision]
	before("apiserver.watch.cache (create)", "scheduler.informer.receive (create)", wcCreate.Start, siCreate.Start)
	before("scheduler.informer.receive (create)", "scheduler.queue.add", siCreate.Start, queued.Start)
	before("scheduler.queue.add", "scheduler.cycle", queued.Start, cycle.Start)
	before("scheduler.cycle end", "scheduler.bind", cycle.End, bind.Start)
	before("scheduler.bind", "apiserver.watch.cache (bound)", bind.Start, wcBound.Start)
	before("apiserver.watch.cache (bound)", "kubelet.pod.received", wcBound.Start, received.Start)

	// kubelet: the sandbox and each container start inside one sync of the
	// pod worker (same goroutine), after the pod arrived.
	sync1 := first("kubelet.pod.sync", nil)
	before("kubelet.pod.received", "kubelet.pod.sync", received.Start, sync1.Start)
	inSync := func(id string, e Event) {
		t.Helper()
		for _, s := range mine["kubelet.pod.sync"] {
			if s.Goroutine == e.Goroutine && !e.Start.Before(s.Start) && !e.End.After(s.End) {
				return
			}
		}
		t.Errorf("%s at %v–%v (goroutine %d) is inside no kubelet.pod.sync of the pod", id, e.Start.Sub(t0), e.End.Sub(t0), e.Goroutine)
	}
	sandbox := first("kubelet.sandbox.create", nil)
	if sandbox.Failed {
		t.Errorf("sandbox creation failed: %+v", sandbox)
	}
	inSync("kubelet.sandbox.create", sandbox)
	// Each container start ends where its CRI call does (kubelet.cri.start,
	// on the same goroutine).
	started := map[string]Event{}
	var lastStart Event
	for _, e := range mine["kubelet.container.start"] {
		inSync("kubelet.container.start "+e.Container, e)
		before("kubelet.sandbox.create end", "kubelet.container.start "+e.Container, sandbox.End, e.Start)
		if e.End.Equal(e.Start) {
			t.Errorf("container %s: no end of the CRI StartContainer after its start", e.Container)
		}
		started[e.Container] = e
		if e.End.After(lastStart.End) {
			lastStart = e
		}
	}
	if len(started) != 2 || started["web"].Start.IsZero() || started["side"].Start.IsZero() {
		t.Errorf("container starts: %v, want web and side once each", keys(started))
	}
	// The runtime's StartedAt, read from the kubelet's status (sorted by
	// container name: side, web): inside each container's start, and the
	// same second as the API's (which the status manager truncates).
	var runtime []time.Time
	for _, e := range mine["kubelet.status.set"] {
		if e.Statuses == 2 && len(e.ContainersStarted) == 2 && !e.ContainersStarted[0].IsZero() && !e.ContainersStarted[1].IsZero() {
			runtime = e.ContainersStarted
			break
		}
	}
	if runtime == nil {
		t.Errorf("no kubelet.status.set with both containers' StartedAt: %+v", mine["kubelet.status.set"])
	} else {
		api := map[string]time.Time{}
		for _, c := range running.Status.ContainerStatuses {
			if c.State.Running != nil {
				api[c.Name] = c.State.Running.StartedAt
			}
		}
		for i, name := range []string{"side", "web"} {
			c := started[name]
			if runtime[i].Before(c.Start) || runtime[i].After(c.End) {
				t.Errorf("container %s: runtime StartedAt %v outside its start %v–%v", name, runtime[i].Sub(t0), c.Start.Sub(t0), c.End.Sub(t0))
			}
			if !runtime[i].Truncate(time.Second).Equal(api[name]) {
				t.Errorf("container %s: runtime StartedAt %v, the API says %v", name, runtime[i], api[name])
			}
		}
		t.Logf("runtime StartedAt → kubelet's CRI reply: side %v, web %v", started["side"].End.Sub(runtime[0]), started["web"].End.Sub(runtime[1]))
	}
	// The status that said Running was written after the containers
	// started, and came back through the watch cache at the final rv.
	var runningWrite Event
	for _, e := range mine["kubelet.status.write"] {
		if e.Start.After(lastStart.End) {
			runningWrite = e
			break
		}
	}
	if runningWrite.Start.IsZero() {
		t.Errorf("no kubelet.status.write after the last container started")
	} else if w, ok := watched[finalRV]; ok {
		before("kubelet.status.write (Running)", "apiserver.watch.cache (Running)", runningWrite.Start, w.Start)
	}
	before("kubelet.pod.received", "kubelet.status.set", received.Start, first("kubelet.status.set", nil).Start)
	before("kubelet.pod.received", "kubelet.pod.updated", received.Start, first("kubelet.pod.updated", nil).Start)
	t.Logf("create→scheduled %v (cycle %v, bind %v), bound→kubelet %v, sandbox %v, containers %v / %v, create→Running written %v",
		bind.End.Sub(wcCreate.Start), cycle.Duration(), bind.Duration(), received.Start.Sub(wcBound.Start), sandbox.Duration(),
		durOf(started["web"]), durOf(started["side"]), runningWrite.Start.Sub(wcCreate.Start))
	if cycle.Node != node {
		t.Errorf("scheduler.cycle chose node %q, the pod runs on %q", cycle.Node, node)
	}

	// Hits: the counters around the lifecycle, minus the background rate,
	// and the hits this pod's own events account for.
	window := t2.Sub(t1)
	scale := window.Seconds() / idle.Seconds()
	var ids []string
	for id := range h2 {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	rowOf := map[string]*Row{}
	for i := range Catalogue {
		rowOf[Catalogue[i].ID] = &Catalogue[i]
	}
	type sums struct{ diff, bg, own float64 }
	var total = map[string]*sums{"write": {}, "write (detail)": {}, "pod": {}, "pod (detail)": {}}
	t.Logf("probe hits during the pod's lifecycle (%v; background measured over %v idle, scaled):", window.Round(time.Millisecond), idle)
	t.Logf("  %-38s %6s %6s %6s %6s", "row", "hits", "bg", "net", "pod's")
	for _, id := range ids {
		r := rowOf[id]
		diff := float64(h2[id] - h1[id])
		bg := float64(h1[id]-h0[id]) * scale
		own := 0.0
		if pr := podRowIDs[id]; pr != nil {
			own = float64(len(mine[id]))
			if pr.Timed {
				own *= 2
			}
		}
		if diff == 0 && bg == 0 {
			continue
		}
		group := "write"
		if podRowIDs[id] != nil {
			group = "pod"
		}
		if r.Detail {
			group += " (detail)"
		}
		s := total[group]
		s.diff, s.bg, s.own = s.diff+diff, s.bg+bg, s.own+own
		t.Logf("  %-38s %6.0f %6.1f %6.1f %6.0f  %s", id, diff, bg, diff-bg, own, group)
	}
	for _, g := range []string{"write", "write (detail)", "pod", "pod (detail)"} {
		s := total[g]
		t.Logf("  sum %-34s %6.0f %6.1f %6.1f %6.0f", g, s.diff, s.bg, s.diff-s.bg, s.own)
	}
	// The writes the pod caused (its own and the Events about it), as the
	// write rows saw them in the window.
	podWrites, eventWrites, eventCached := 0, 0, 0
	for _, e := range all {
		if e.Start.Before(t1) || e.Start.After(t2) {
			continue
		}
		switch {
		case e.Probe == "apiserver.etcd.put" && e.Key == "/registry"+key:
			podWrites++
		case e.Probe == "apiserver.etcd.put" && strings.HasPrefix(e.Key, "/registry/events/"+ns+"/"):
			eventWrites++
		case e.Probe == "apiserver.watch.cache" && strings.HasPrefix(e.Key, "/events/"+ns+"/"):
			eventCached++
		}
	}
	t.Logf("  the pod's writes: %d to the pod, %d Events about it (%d of them through the watch cache: %d more apiserver.watch.cache hits); "+
		"at 7 default write-path hits a write (4 in kube-apiserver, 3 in etcd) that is %d",
		podWrites, eventWrites, eventCached, eventCached, 7*(podWrites+eventWrites))
	def := total["write"].diff - total["write"].bg + total["pod"].diff - total["pod"].bg
	t.Logf("  one pod, default rows (no --detail): about %.0f hits net of background (%.0f write path + %.0f pod rows; the pod rows' own events: %.0f)",
		def, total["write"].diff-total["write"].bg, total["pod"].diff-total["pod"].bg, total["pod"].own)
}

func durOf(e Event) time.Duration { return e.Duration() }

// openerOf is the event that opened the span closing event c ends: the
// last one of an Opens row with c's join key before it.
func openerOf(all []Event, c *Event) *Event {
	var o *Event
	for i := range all {
		e := &all[i]
		if e.Row != nil && e.Row.Role == Opens && e.Row.Pair == c.Row.Pair && e.PairKey() == c.PairKey() && !e.Start.After(c.Start) {
			o = e
		}
	}
	return o
}

// closerOf is the first event of a Closes row with o's join key after o.
func closerOf(all []Event, o *Event) *Event {
	for i := range all {
		e := &all[i]
		if e.Row != nil && e.Row.Role == Closes && e.PairKey() == o.PairKey() && !e.Start.Before(o.Start) {
			return e
		}
	}
	return nil
}

func mustRV(t *testing.T, s string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", s, err)
	}
	return v
}

func keys[K comparable, V any](m map[K]V) []K {
	var out []K
	for k := range m {
		out = append(out, k)
	}
	return out
}
