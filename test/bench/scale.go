package main

// The scale benchmark (--op=scale): what the agent costs as the cluster
// grows, on the running lab (make lab-up). kwok (sigs.k8s.io/kwok, built by
// test/lab/build.sh kwok) simulates --scale-nodes Nodes against the lab's
// control plane, and pods are created at --pod-rate until --scale-pods exist,
// every one scheduled onto a fake node. The agent runs as the DaemonSet runs
// it on the lab's node (--node-name): a pod bound to another node is done for
// it once bound — that node's kubelet part is that node's agent's, and a kwok
// node has no kubelet, so no such part comes. So each pod's trace ends where
// the control plane's part ends, with kpath.kubelet_part_from naming the fake
// node. The agent's RSS and CPU are read at every 1000 pods: flat means the
// state of a finished pod is freed, not kept.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

const (
	// scaleNamespace holds the scale benchmark's pods.
	scaleNamespace = "kpath-bench-scale"
	// kwokVersion is test/lab/versions.env's KWOK_VERSION.
	kwokVersion = "v0.8.0"
	// The fake nodes carry kwok's annotation (kwok manages only those), a
	// label of their own (to find and delete them) and a taint only the
	// benchmark's pods tolerate, so nothing else lands on them.
	kwokNodeKey   = "kwok.x-k8s.io/node"
	scaleNodeMark = "kpath.dev/bench"
	scaleStep     = 1000 // pods between two checkpoints
)

// checkpoint is what was read when so many pods had been created.
type checkpoint struct {
	pods      int
	at        time.Time
	rss, heap float64 // the agent's VmRSS and Go heap in use, bytes
	cpu       map[string]cpuTimes
	m         metrics
}

func (c checkpoint) dropped() float64 {
	return c.m.value("kpath_events_dropped_total", nil) + c.m.value("kpath_export_dropped_spans_total", nil)
}

// kwokPaths finds the kwok binary and its stages, building them when absent.
func kwokPaths(ctx context.Context) (bin, stages string, err error) {
	dir := filepath.Join(cacheDir(), "bin", "tools", "kwok-"+kwokVersion)
	bin, stages = filepath.Join(dir, "kwok"), filepath.Join(dir, "kwok-stages.yaml")
	if _, err := os.Stat(stages); err == nil {
		return bin, stages, nil
	}
	fmt.Fprintf(os.Stderr, "bench: no kwok at %s: building it (test/lab/build.sh kwok)\n", bin)
	cmd := exec.CommandContext(ctx, "bash", "test/lab/build.sh", "kwok")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("building kwok (test/lab/build.sh kwok, from the repository's root): %w", err)
	}
	return bin, stages, nil
}

// runScale is the whole --op=scale run.
func runScale(ctx context.Context, env *benchEnv, agentSrc string) error {
	c := env.cfg
	l, err := openLab()
	if err != nil {
		return err
	}
	kwokBin, stages, err := kwokPaths(ctx)
	if err != nil {
		return err
	}
	cs, err := l.client()
	if err != nil {
		return err
	}
	// What an interrupted run left goes first, and everything this run
	// makes goes at its end, interrupted or not.
	cleanup := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := deleteFakeNodes(dctx, cs); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
	}
	cleanup()
	if err := freshNamespace(ctx, cs, scaleNamespace); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = cs.CoreV1().Namespaces().Delete(dctx, scaleNamespace, metav1.DeleteOptions{})
		cleanup()
	}()

	fmt.Fprintf(os.Stdout, "# kpath scale benchmark\n\n- started %s; nproc %d; load average %s; lab %s, node %s\n",
		time.Now().Format(time.RFC3339), runtime.NumCPU(), loadavg(), l.dir, l.node)
	for _, comp := range labComponents {
		fmt.Fprintf(os.Stdout, "- %s\n", describeBinary(comp, l.bins[comp], ""))
	}
	fmt.Fprintf(os.Stdout, "- %s; built from the %s\n", describeBinary("kpath-agent", c.agentBin, ""), agentSrc)
	fmt.Fprintf(os.Stdout, "- kwok %s (%s), stages %s\n", kwokVersion, kwokBin, stages)
	fmt.Fprintf(os.Stdout, "- other BPF tracers on the host: %s\n\n", procList(bpfTracers(0)))
	start := time.Now()

	fmt.Fprintf(os.Stderr, "bench: creating %d fake nodes ... ", c.scaleNodes)
	if err := createFakeNodes(ctx, cs, c.scaleNodes); err != nil {
		return err
	}
	kwok, err := startProc("kwok", filepath.Join(env.tmp, "kwok.log"), nil, kwokBin,
		"--kubeconfig="+l.kubeconfig, "--config="+stages, "--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector="+kwokNodeKey+"=fake",
		"--cidr=10.240.0.0/12", "--node-ip=10.239.0.1")
	if err != nil {
		return err
	}
	defer kwok.stop(syscall.SIGTERM, 20*time.Second)
	if err := waitNodesReady(ctx, cs, kwok, c.scaleNodes, 3*time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%d Ready (kwok)\n", c.scaleNodes)

	var targets []target
	for _, comp := range tracedComponents {
		targets = append(targets, target{comp, l.pids[comp]})
	}
	ag, err := startAgent(ctx, env, env.tmp, targets, "--node-name="+l.node, "--kubeconfig="+l.kubeconfig)
	if err != nil {
		return err
	}
	defer ag.stop()

	pods := newPodWatch()
	stopWatch, err := pods.follow(ctx, cs)
	if err != nil {
		return err
	}
	defer stopWatch()

	take := func(n int) (checkpoint, error) {
		cp := checkpoint{pods: n, at: time.Now(), cpu: map[string]cpuTimes{}}
		for _, comp := range labComponents {
			cp.cpu[comp] = procCPU(l.pids[comp])
		}
		cp.cpu["kpath-agent"] = procCPU(ag.pid())
		cp.cpu["kwok"] = procCPU(kwok.pid())
		cp.rss = float64(vmRSS(ag.pid()))
		var err error
		// One scrape: nothing here is aligned with the agent's counter
		// refresh, and polling for it would be CPU charged to the pods.
		if cp.m, err = scrape(ag.metricsURL); err != nil {
			return cp, fmt.Errorf("scraping the agent's metrics: %w", err)
		}
		cp.heap = cp.m.value("go_memstats_heap_inuse_bytes", nil)
		if perr := ag.exited(); perr != nil {
			return cp, perr
		}
		return cp, nil
	}
	if err := sleepCtx(ctx, c.warmup); err != nil {
		return err
	}
	var cps []checkpoint
	cp, err := take(0)
	if err != nil {
		return err
	}
	cps = append(cps, cp)

	fmt.Fprintf(os.Stderr, "bench: creating %d pods at %.0f/s ...\n", c.scalePods, c.podRate)
	var failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.podRate))
	created := time.Now()
	for i := 1; i <= c.scalePods; i++ {
		select {
		case <-ctx.Done():
			tick.Stop()
			wg.Wait()
			return fmt.Errorf("interrupted: %w", ctx.Err())
		case <-tick.C:
		}
		sem <- struct{}{}
		name := fmt.Sprintf("scale-%05d", i)
		wg.Go(func() {
			defer func() { <-sem }()
			if err := createScalePod(ctx, cs, name); err != nil {
				failed.Add(1)
				errOnce.Do(func() { firstErr = err })
			}
		})
		if i%scaleStep == 0 {
			if cp, err = take(i); err != nil {
				tick.Stop()
				wg.Wait()
				return err
			}
			cps = append(cps, cp)
			fmt.Fprintf(os.Stderr, "bench: %5d pods: agent RSS %.0f MB, heap %.0f MB, %d Running\n", i, cp.rss/1e6, cp.heap/1e6, pods.running())
		}
	}
	tick.Stop()
	wg.Wait()
	createWindow := time.Since(created)

	// Every pod Running (kwok), then its trace out (the agent's settle time
	// and export interval): the final checkpoint has all of them.
	waitAll := func(what string, max time.Duration, done func() bool) error {
		deadline := time.Now().Add(max)
		for !done() {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not after %s", what, max)
			}
			if err := sleepCtx(ctx, time.Second); err != nil {
				return err
			}
		}
		return nil
	}
	want := c.scalePods - int(failed.Load())
	runErr := waitAll(fmt.Sprintf("%d pods Running", want), 3*time.Minute, func() bool { return pods.running() >= want })
	traceErr := waitAll(fmt.Sprintf("a trace for each of %d pods", want), time.Minute, func() bool { return len(env.sink.scaleRoots()) >= want })
	if cp, err = take(c.scalePods); err != nil {
		return err
	}
	settled := cp

	// Then the pods go (kwok removes a deleted pod of a fake node), and
	// the agent is to let go of them.
	fmt.Fprintf(os.Stderr, "bench: deleting the %d pods ...\n", want)
	// One delete a pod, at the create rate: a DeleteCollection of 10 000
	// pods outlasts the API server's request timeout.
	delErr := deleteScalePods(ctx, cs, c.scalePods, c.podRate)
	if delErr == nil {
		delErr = waitAll("the pods gone", 5*time.Minute, func() bool { return pods.live() == 0 })
	}
	// The pod correlator keeps an emitted pod for a slow consumer's late
	// receipt, at most its MaxWait (5 min); measured past that.
	after := settled
	if delErr == nil && c.scaleLinger > 0 {
		fmt.Fprintf(os.Stderr, "bench: pods gone; waiting %s for the agent to forget them ...\n", c.scaleLinger)
		if err := sleepCtx(ctx, c.scaleLinger); err != nil {
			return err
		}
		if after, err = take(c.scalePods); err != nil {
			return err
		}
	}
	reportScale(os.Stdout, c, l, time.Since(start), scaleResult{
		cps: cps, settled: settled, after: after, createWindow: createWindow,
		failed: int(failed.Load()), firstErr: firstErr, running: pods.everRunning(),
		roots: env.sink.scaleRoots(), runErr: runErr, traceErr: traceErr, delErr: delErr,
	})
	return errors.Join(runErr, traceErr, delErr)
}

// scaleResult is everything the report says.
type scaleResult struct {
	cps                      []checkpoint // at 0, 1000, 2000, ... pods created
	settled, after           checkpoint   // every pod traced; after the delete and the linger
	createWindow             time.Duration
	failed                   int
	firstErr                 error
	running                  int
	roots                    map[string]scaleRoot
	runErr, traceErr, delErr error
}

func reportScale(w io.Writer, c config, l *lab, elapsed time.Duration, r scaleResult) {
	fmt.Fprintf(w, "- finished %s after %s; load average %s\n", time.Now().Format(time.RFC3339), elapsed.Round(time.Second), loadavg())
	fmt.Fprintf(w, "- %d kwok nodes (Lease heartbeats); %d pods created at %.0f/s in %s (%d failed%s), %d seen Running; kpath-agent --export=%s --node-name=%s --kubeconfig=<lab> %s\n\n",
		c.scaleNodes, c.scalePods, c.podRate, r.createWindow.Round(time.Second), r.failed, errSuffix(r.firstErr), r.running, c.kpathExport, l.node, strings.Join(c.agentFlags, " "))

	comps := append(slices.Clone(labComponents), "kwok", "kpath-agent")
	fmt.Fprint(w, "## Per 1000 pods created\n\n| pods | agent RSS MB | agent heap MB | agent CPU ms/pod |")
	for _, comp := range comps[:len(comps)-1] {
		fmt.Fprintf(w, " %s ms/pod |", comp)
	}
	fmt.Fprint(w, " events dropped |\n|")
	for range 5 + len(comps) {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	var perPod []float64
	for i := 1; i < len(r.cps); i++ {
		a, b := r.cps[i-1], r.cps[i]
		n := float64(b.pods - a.pods)
		agentMs := ms(b.cpu["kpath-agent"].sub(a.cpu["kpath-agent"]).total()) / n
		perPod = append(perPod, agentMs)
		fmt.Fprintf(w, "| %d | %.1f | %.1f | %.3f |", b.pods, b.rss/1e6, b.heap/1e6, agentMs)
		for _, comp := range comps[:len(comps)-1] {
			fmt.Fprintf(w, " %.3f |", ms(b.cpu[comp].sub(a.cpu[comp]).total())/n)
		}
		fmt.Fprintf(w, " %.0f |\n", b.dropped()-a.dropped())
	}
	fmt.Fprintf(w, "| settled | %.1f | %.1f | | | | | | | | | %.0f |\n", r.settled.rss/1e6, r.settled.heap/1e6, r.settled.dropped()-r.cps[0].dropped())
	if r.after.at.After(r.settled.at) {
		fmt.Fprintf(w, "| deleted, +%s | %.1f | %.1f | | | | | | | | | %.0f |\n", c.scaleLinger, r.after.rss/1e6, r.after.heap/1e6, r.after.dropped()-r.cps[0].dropped())
	}

	fmt.Fprint(w, "\n## Flat?\n\n| measure | value |\n|---|---|\n")
	if len(r.cps) > 2 {
		first, last := r.cps[1], r.cps[len(r.cps)-1]
		fmt.Fprintf(w, "| agent RSS at %d pods / at %d | %.3f |\n", last.pods, first.pods, last.rss/first.rss)
		fmt.Fprintf(w, "| agent heap at %d pods / at %d | %.3f |\n", last.pods, first.pods, last.heap/first.heap)
		fmt.Fprintf(w, "| agent CPU per pod, last %d / first %d | %.3f |\n", scaleStep, scaleStep, perPod[len(perPod)-1]/perPod[0])
		fmt.Fprintf(w, "| agent CPU per pod, per step | %s ms |\n", summarize(perPod).fmt(3))
		fmt.Fprintf(w, "| agent peak RSS (settled) | %.1f MB |\n", r.settled.rss/1e6)
	}
	var one, complete, elsewhere, more int
	missing := map[string]int{}
	for _, root := range r.roots {
		switch {
		case root.roots == 1:
			one++
		case root.roots > 1:
			more++
		}
		if root.complete > 0 {
			complete++
		} else {
			missing[root.missing]++
		}
		if strings.HasPrefix(root.kubeletFrom, "kpath-kwok-") {
			elsewhere++
		}
	}
	want := c.scalePods - r.failed
	var untraced []string
	for i := 1; i <= c.scalePods && len(untraced) < 5; i++ {
		if name := fmt.Sprintf("scale-%05d", i); r.roots[name].roots == 0 {
			untraced = append(untraced, name)
		}
	}
	fmt.Fprintf(w, "| pods with a trace | %d of %d |\n", len(r.roots), want)
	if len(untraced) > 0 {
		fmt.Fprintf(w, "| pods without one (at most 5) | %s |\n", strings.Join(untraced, " "))
	}
	fmt.Fprintf(w, "| of them with exactly one root / more | %d / %d |\n", one, more)
	fmt.Fprintf(w, "| of them complete (create, scheduling, binding) | %d |\n", complete)
	fmt.Fprintf(w, "| of them ending at the control plane (kpath.kubelet_part_from a kwok node) | %d |\n", elsewhere)
	for m, n := range missing {
		fmt.Fprintf(w, "| incomplete, missing %q | %d |\n", m, n)
	}
	fmt.Fprintf(w, "| events dropped, whole run | %.0f |\n", r.settled.dropped()-r.cps[0].dropped())
	tr := subMap(r.settled.m.byLabel("kpath_traces_total", "complete"), r.cps[0].m.byLabel("kpath_traces_total", "complete"))
	fmt.Fprintf(w, "| traces of any kind, whole run: complete / incomplete | %.0f / %.0f |\n", tr["true"], tr["false"])
	type unjoined struct{ probe, reason string }
	uj := map[unjoined]float64{}
	for _, cp := range []struct {
		m    metrics
		sign float64
	}{{r.settled.m, 1}, {r.cps[0].m, -1}} {
		for _, smp := range cp.m {
			if smp.name == "kpath_events_unjoined_total" {
				uj[unjoined{smp.labels["probe"], smp.labels["reason"]}] += cp.sign * smp.value
			}
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(uj), func(a, b unjoined) int { return strings.Compare(a.probe+a.reason, b.probe+b.reason) }) {
		if uj[k] != 0 {
			fmt.Fprintf(w, "| kpath_events_unjoined_total{probe=%q,reason=%q} | %.0f |\n", k.probe, k.reason, uj[k])
		}
	}
	for _, name := range []string{"kpath_events_dropped_total", "kpath_export_dropped_spans_total"} {
		d := subMap(r.settled.m.byLabel(name, "reason"), r.cps[0].m.byLabel(name, "reason"))
		for _, reason := range slices.Sorted(maps.Keys(d)) {
			if d[reason] != 0 {
				fmt.Fprintf(w, "| %s{reason=%q} | %.0f |\n", name, reason, d[reason])
			}
		}
	}
	for _, e := range []error{r.runErr, r.traceErr, r.delErr} {
		if e != nil {
			fmt.Fprintf(w, "\nNOT DONE: %v\n", e)
		}
	}
}

func errSuffix(err error) string {
	if err == nil {
		return ""
	}
	return "; first: " + err.Error()
}

// vmRSS is a process's resident set, bytes (0 when unreadable).
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func fakeNodeName(i int) string { return fmt.Sprintf("kpath-kwok-%03d", i) }

// createFakeNodes makes n Nodes for kwok, eight at a time.
func createFakeNodes(ctx context.Context, cs kubernetes.Interface, n int) error {
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			name := fakeNodeName(i)
			node := &corev1.Node{
				ObjectMeta: metav1.ObjectMeta{
					Name:        name,
					Labels:      map[string]string{scaleNodeMark: "scale", "type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"},
					Annotations: map[string]string{kwokNodeKey: "fake", "node.alpha.kubernetes.io/ttl": "0"},
				},
				Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: kwokNodeKey, Value: "fake", Effect: corev1.TaintEffectNoSchedule}}},
			}
			if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
				errs <- fmt.Errorf("create node %s: %w", name, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs // the first, if any
}

// deleteFakeNodes removes the benchmark's Nodes and their Leases.
func deleteFakeNodes(ctx context.Context, cs kubernetes.Interface) error {
	sel := metav1.ListOptions{LabelSelector: scaleNodeMark + "=scale"}
	nodes, err := cs.CoreV1().Nodes().List(ctx, sel)
	if err != nil {
		return fmt.Errorf("list the fake nodes: %w", err)
	}
	if len(nodes.Items) == 0 {
		return nil
	}
	if err := cs.CoreV1().Nodes().DeleteCollection(ctx, metav1.DeleteOptions{}, sel); err != nil {
		return fmt.Errorf("delete the fake nodes: %w", err)
	}
	for _, n := range nodes.Items {
		err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Delete(ctx, n.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete lease of %s: %w", n.Name, err)
		}
	}
	return nil
}

// waitNodesReady waits for n fake nodes to be Ready, kwok's doing.
func waitNodesReady(ctx context.Context, cs kubernetes.Interface, kwok *proc, n int, max time.Duration) error {
	deadline := time.Now().Add(max)
	for {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: scaleNodeMark + "=scale", ResourceVersion: "0"})
		if err != nil {
			return fmt.Errorf("list the fake nodes: %w", err)
		}
		ready := 0
		for _, node := range nodes.Items {
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready >= n {
			return nil
		}
		if err := kwok.exited(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d fake nodes Ready after %s; kwok's log:\n%s", ready, n, max, kwok.tail(15))
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return err
		}
	}
}

// createScalePod creates one pod for the fake nodes.
func createScalePod(ctx context.Context, cs kubernetes.Interface, name string) error {
	no, zero := false, int64(0)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "kpath-bench-scale"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &zero,
			NodeSelector:                  map[string]string{"type": "kwok"},
			Tolerations:                   []corev1.Toleration{{Key: kwokNodeKey, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			Containers:                    []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}},
		},
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := cs.CoreV1().Pods(scaleNamespace).Create(cctx, p, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create pod %s: %w", name, err)
	}
	return nil
}

// deleteScalePods deletes the pods createScalePod made, rate a second.
func deleteScalePods(ctx context.Context, cs kubernetes.Interface, n int, rate float64) error {
	zero := int64(0)
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i := 1; i <= n; i++ {
		select {
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		case <-tick.C:
		}
		sem <- struct{}{}
		name := fmt.Sprintf("scale-%05d", i)
		wg.Go(func() {
			defer func() { <-sem }()
			err := cs.CoreV1().Pods(scaleNamespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			if err != nil && !apierrors.IsNotFound(err) {
				once.Do(func() { first = fmt.Errorf("delete pod %s: %w", name, err) })
			}
		})
	}
	wg.Wait()
	return first
}

// podWatch follows the namespace's pods: which exist, which ever ran.
type podWatch struct {
	mu    sync.Mutex
	alive map[string]bool // name → Running
	ran   map[string]bool
}

func newPodWatch() *podWatch { return &podWatch{alive: map[string]bool{}, ran: map[string]bool{}} }

func (p *podWatch) running() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.alive {
		if r {
			n++
		}
	}
	return n
}

func (p *podWatch) live() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.alive)
}

func (p *podWatch) everRunning() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.ran)
}

// follow watches until stop is called.
func (p *podWatch) follow(ctx context.Context, cs kubernetes.Interface) (stop func(), err error) {
	relist := func(items []corev1.Pod) {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.alive = map[string]bool{}
		for _, pod := range items {
			p.alive[pod.Name] = pod.Status.Phase == corev1.PodRunning
		}
	}
	return followPods(ctx, cs, scaleNamespace, relist, func(t watch.EventType, pod *corev1.Pod) {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch t {
		case watch.Deleted:
			delete(p.alive, pod.Name)
		case watch.Added, watch.Modified:
			run := pod.Status.Phase == corev1.PodRunning
			p.alive[pod.Name] = run
			if run {
				p.ran[pod.Name] = true
			}
		}
	})
}
