package main

// The pod-lifecycle benchmark (--op=pods): what kpath costs the whole chain a
// pod goes through, on the running lab (make lab-up). Pods are created at a
// fixed rate, deleted once Running, and followed until their object is gone;
// every round runs each mode (none, kpath) once. CPU per lifecycle is the CPU
// each lab component used in the window over the lifecycles that ended in it
// — at a fixed rate both modes do the same work, so the ratio is the cost.
// Everything else the lab does meanwhile (leases, node status, the Events
// about the pods) is in both modes' CPU and in kpath's hits.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// podNamespace holds the lifecycle benchmark's pods.
const podNamespace = "kpath-bench-pods"

// labComponents are the lab's processes whose CPU a lifecycle is charged:
// the ones kpath probes and containerd, which it does not (the baseline of a
// component kpath leaves alone). Shims and the pods' own processes start and
// end inside the window: /proc has no account of them at its edges.
var labComponents = []string{"kube-apiserver", "etcd", "kube-scheduler", "kubelet", "kube-controller-manager", "containerd"}

// tracedComponents are the ones the agent must have probes on.
var tracedComponents = []string{"kube-apiserver", "etcd", "kube-scheduler", "kubelet", "kube-controller-manager"}

// lab is what the lifecycle benchmark reads of the running lab.
type lab struct {
	dir, kubeconfig, node, image string
	pids                         map[string]int
	bins                         map[string]string
}

// openLab reads $KPATH_LAB_DIR/env and the lab's pid files, and checks each
// pid is the component it names.
func openLab() (*lab, error) {
	dir := os.Getenv("KPATH_LAB_DIR")
	if dir == "" {
		dir = filepath.Join(os.Getenv("HOME"), ".cache", "kpath", "lab")
	}
	env, err := readEnvFile(filepath.Join(dir, "env"))
	if err != nil {
		return nil, fmt.Errorf("--op=pods runs on the lab: %w (start it with make lab-up)", err)
	}
	l := &lab{dir: dir, kubeconfig: filepath.Join(dir, "admin.kubeconfig"), node: env["KPATH_LAB_NODE"],
		image: env["KPATH_LAB_WORKLOAD_IMAGE"], pids: map[string]int{}, bins: map[string]string{}}
	if l.node == "" || l.image == "" || env["KPATH_LAB_PID_DIR"] == "" {
		return nil, fmt.Errorf("%s/env: no KPATH_LAB_NODE, KPATH_LAB_WORKLOAD_IMAGE or KPATH_LAB_PID_DIR (remake it with make lab-up)", dir)
	}
	for _, c := range labComponents {
		b, err := os.ReadFile(filepath.Join(env["KPATH_LAB_PID_DIR"], c+".pid"))
		if err != nil {
			return nil, fmt.Errorf("lab %s: %w (is the lab up? make lab-up)", c, err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("lab %s: pid file: %w", c, err)
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || filepath.Base(exe) != c {
			return nil, fmt.Errorf("lab %s: pid %d is not running %s (%q, %v): restart the lab with make lab-up", c, pid, c, exe, err)
		}
		l.pids[c], l.bins[c] = pid, exe
	}
	return l, nil
}

// client is a client of the lab's API server, unthrottled: the bench's
// rate is its own.
func (l *lab) client() (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", l.kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("lab kubeconfig: %w", err)
	}
	rc.QPS, rc.Burst, rc.UserAgent = -1, 1<<20, "kpath-bench"
	return kubernetes.NewForConfig(rc)
}

// readEnvFile reads the export K='V' lines of the lab's env file.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "export ")
		if !ok {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v, _, _ = strings.Cut(v, "   #") // the env file's trailing comments
		out[k] = strings.Trim(strings.TrimSpace(v), "'")
	}
	return out, sc.Err()
}

// lifeRound is one mode in one round of the lifecycle benchmark.
type lifeRound struct {
	round int
	mode  string

	window        time.Duration
	done          int             // lifecycles that ended (object gone) in the window
	neverRan      int             // of those, pods that were not Running within podRunTimeout
	failed        int             // API errors in the window
	err           error           // the first
	startup       []time.Duration // create → Running, of the lifecycles done in the window
	p50, p99      time.Duration
	cpu           map[string]cpuTimes // by lab component, and "kpath-agent"
	hostBusy      time.Duration
	hitLifecycles int                // lifecycles that ended between the two refreshes of the hit counters
	hits          map[string]float64 // by component
	traces        float64
	incomplete    float64
	dropped       float64
	podRoots      int64 // pod traces the sink received for the bench's pods
	podComplete   int64
	foreign       []hostProc
}

func (r lifeRound) per(d time.Duration) float64 {
	if r.done == 0 {
		return 0
	}
	return ms(d) / float64(r.done)
}

// cpuSum is the CPU of every lab component and the agent in the window.
func (r lifeRound) cpuSum() time.Duration {
	var sum time.Duration
	for _, c := range r.cpu {
		sum += c.total()
	}
	return sum
}

// total is cpuSum per lifecycle, in ms.
func (r lifeRound) total() float64 { return r.per(r.cpuSum()) }

func (r lifeRound) otherCores() float64 {
	return float64(r.hostBusy-r.cpuSum()) / float64(r.window)
}

// podRunTimeout is how long a lifecycle waits for its pod to run before it
// deletes it anyway and counts it as never run.
const podRunTimeout = 60 * time.Second

// runLifecycles is the whole --op=pods run.
func runLifecycles(ctx context.Context, env *benchEnv, agentSrc string) error {
	c := env.cfg
	l, err := openLab()
	if err != nil {
		return err
	}
	cs, err := l.client()
	if err != nil {
		return err
	}
	if err := freshNamespace(ctx, cs, podNamespace); err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = cs.CoreV1().Namespaces().Delete(dctx, podNamespace, metav1.DeleteOptions{})
	}()

	fmt.Fprintf(os.Stdout, "# kpath pod-lifecycle benchmark\n\n- started %s; nproc %d; load average %s; lab %s, node %s\n",
		time.Now().Format(time.RFC3339), runtime.NumCPU(), loadavg(), l.dir, l.node)
	for _, comp := range labComponents {
		fmt.Fprintf(os.Stdout, "- %s\n", describeBinary(comp, l.bins[comp], ""))
	}
	if c.has(modeKpath) {
		fmt.Fprintf(os.Stdout, "- %s; built from the %s\n", describeBinary("kpath-agent", c.agentBin, ""), agentSrc)
	}
	fmt.Fprintf(os.Stdout, "- other BPF tracers on the host: %s\n\n", procList(bpfTracers(0)))

	start := time.Now()
	var rs []lifeRound
	for r := 1; r <= c.rounds; r++ {
		for _, m := range c.modes {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("interrupted: %w", err)
			}
			fmt.Fprintf(os.Stderr, "bench: round %d/%d mode %-6s ... ", r, c.rounds, m)
			res, err := runLifeRound(ctx, env, l, cs, r, m)
			if err != nil {
				fmt.Fprintln(os.Stderr, "failed")
				return fmt.Errorf("round %d mode %s: %w", r, m, err)
			}
			fmt.Fprintf(os.Stderr, "%d lifecycles, %.2f ms CPU each (all components and the agent), startup p50 %.0f ms\n",
				res.done, res.total(), ms(res.p50))
			rs = append(rs, res)
		}
	}
	reportLifecycles(os.Stdout, c, l, time.Since(start), rs)
	return nil
}

// freshNamespace makes namespace podNamespace, empty: one left by an
// interrupted run is deleted first.
func freshNamespace(ctx context.Context, cs kubernetes.Interface, podNamespace string) error {
	ns := cs.CoreV1().Namespaces()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := ns.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: podNamespace}}, metav1.CreateOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsAlreadyExists(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("create namespace %s: %w", podNamespace, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s from an earlier run is still there after 2m: delete it (kubectl delete ns %s)", podNamespace, podNamespace)
		}
		_ = ns.Delete(ctx, podNamespace, metav1.DeleteOptions{})
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func runLifeRound(ctx context.Context, env *benchEnv, l *lab, cs kubernetes.Interface, round int, mode string) (res lifeRound, err error) {
	res = lifeRound{round: round, mode: mode}
	dir := filepath.Join(env.tmp, fmt.Sprintf("r%d-%s", round, mode))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	for _, comp := range labComponents {
		if st, err := readStat(l.pids[comp]); err != nil || st.state == 'Z' {
			return res, fmt.Errorf("lab %s (pid %d) is gone: the lab restarted it or went down; start again", comp, l.pids[comp])
		}
	}
	var ag *agent
	if mode == modeKpath {
		var targets []target
		for _, comp := range tracedComponents {
			targets = append(targets, target{comp, l.pids[comp]})
		}
		// As the DaemonSet runs it: this node's name, pod metadata from the API.
		ag, err = startAgent(ctx, env, dir, targets, "--node-name="+l.node, "--kubeconfig="+l.kubeconfig)
		if err != nil {
			return res, err
		}
		defer ag.stop()
	}
	agentPID := 0
	if ag != nil {
		agentPID = ag.pid()
	}
	type snap struct {
		at, scraped time.Time
		cpu         map[string]cpuTimes
		host        hostCPU
		m           metrics
		roots, full int64
	}
	take := func() (snap, error) {
		s := snap{at: time.Now(), cpu: map[string]cpuTimes{}, host: readHostCPU(),
			roots: env.sink.podRoots.Load(), full: env.sink.podComplete.Load()}
		for _, comp := range labComponents {
			s.cpu[comp] = procCPU(l.pids[comp])
		}
		if ag != nil {
			s.cpu["kpath-agent"] = procCPU(agentPID)
			var err error
			if s.m, s.scraped, err = scrapeAtTick(ctx, ag.metricsURL); err != nil {
				return s, fmt.Errorf("scraping the agent's metrics: %w", err)
			}
		}
		return s, nil
	}

	ch := newChurn(cs, l.image, fmt.Sprintf("r%d-%s", round, mode))
	stopWatch, err := ch.watch(ctx)
	if err != nil {
		return res, err
	}
	defer stopWatch()
	churnCtx, stopChurn := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { ch.run(churnCtx, env.cfg.podRate) })
	defer func() {
		stopChurn()
		wg.Wait()
	}()

	res.foreign = bpfTracers(agentPID)
	var before, after snap
	if err = sleepCtx(ctx, env.cfg.warmup); err != nil {
		return res, err
	}
	if before, err = take(); err != nil {
		return res, err
	}
	if err = sleepCtx(ctx, env.cfg.duration-time.Since(before.at)); err != nil {
		return res, err
	}
	if after, err = take(); err != nil {
		return res, err
	}
	res.foreign = dedup(append(res.foreign, bpfTracers(agentPID)...))
	stopChurn()
	wg.Wait()
	// Let the last lifecycles end so the next round starts from a quiet lab.
	if err := ch.drain(ctx, 2*time.Minute); err != nil {
		return res, err
	}

	res.window = after.at.Sub(before.at)
	res.cpu = map[string]cpuTimes{}
	for k, v := range after.cpu {
		res.cpu[k] = v.sub(before.cpu[k])
	}
	res.hostBusy = after.host.busy - before.host.busy
	for _, lc := range ch.ended() {
		if lc.err != nil && !lc.gone.IsZero() && in(lc.gone, before.at, after.at) {
			res.failed++
			if res.err == nil {
				res.err = lc.err
			}
		}
		if lc.gone.IsZero() || lc.err != nil {
			continue
		}
		if in(lc.gone, before.scraped, after.scraped) {
			res.hitLifecycles++
		}
		if !in(lc.gone, before.at, after.at) {
			continue
		}
		res.done++
		if lc.running.IsZero() {
			res.neverRan++
		} else {
			res.startup = append(res.startup, lc.running.Sub(lc.created))
		}
	}
	if res.done == 0 {
		return res, fmt.Errorf("no pod lifecycle ended in the %s window (%d API errors; first: %v)", res.window.Round(time.Second), res.failed, res.err)
	}
	slices.Sort(res.startup)
	res.p50, res.p99 = percentile(res.startup, 0.50), percentile(res.startup, 0.99)
	if ag != nil {
		res.hits = subMap(after.m.byLabel("kpath_probe_hits_total", "component"), before.m.byLabel("kpath_probe_hits_total", "component"))
		t1, t0 := after.m.byLabel("kpath_traces_total", "complete"), before.m.byLabel("kpath_traces_total", "complete")
		res.traces = t1["true"] + t1["false"] - t0["true"] - t0["false"]
		res.incomplete = t1["false"] - t0["false"]
		res.dropped = after.m.value("kpath_events_dropped_total", nil) - before.m.value("kpath_events_dropped_total", nil)
		// A pod's trace goes out a second after it ran (its settle time):
		// counted over the window, the edges cancel out at a fixed rate.
		res.podRoots, res.podComplete = after.roots-before.roots, after.full-before.full
		if perr := ag.exited(); perr != nil {
			return res, perr
		}
	}
	return res, nil
}

func in(t, from, to time.Time) bool { return !t.Before(from) && t.Before(to) }

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// lifecycle is one pod's create → Running → delete → gone.
type lifecycle struct {
	name                      string
	created, running, deleted time.Time
	gone                      time.Time
	err                       error
	runningCh, goneCh         chan struct{}
	runningOnce, goneOnce     sync.Once
}

// churn creates pods at a fixed rate and follows them through one watch.
type churn struct {
	cs     kubernetes.Interface
	image  string
	prefix string
	seq    atomic.Int64

	mu   sync.Mutex
	live map[string]*lifecycle
	all  []*lifecycle
	wg   sync.WaitGroup
}

func newChurn(cs kubernetes.Interface, image, prefix string) *churn {
	return &churn{cs: cs, image: image, prefix: prefix, live: map[string]*lifecycle{}}
}

// watch follows the namespace's pods until the returned stop is called.
func (c *churn) watch(ctx context.Context) (stop func(), err error) {
	return followPods(ctx, c.cs, podNamespace, c.reconcileList, func(t watch.EventType, p *corev1.Pod) {
		switch t {
		case watch.Deleted:
			c.markGone(p.Name)
		case watch.Added, watch.Modified:
			if p.Status.Phase == corev1.PodRunning {
				c.markRunning(p.Name)
			}
		}
	})
}

// reconcileList marks gone the followed pods a relist no longer has (their
// DELETED event fell in the gap between two watches).
func (c *churn) reconcileList(items []corev1.Pod) {
	have := map[string]bool{}
	for _, p := range items {
		have[p.Name] = true
	}
	c.mu.Lock()
	var gone []string
	for n, lc := range c.live {
		if !have[n] && !lc.created.IsZero() {
			gone = append(gone, n)
		}
	}
	c.mu.Unlock()
	for _, n := range gone {
		c.markGone(n)
	}
}

func (c *churn) get(name string) *lifecycle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live[name]
}

func (c *churn) markRunning(name string) {
	if lc := c.get(name); lc != nil {
		lc.runningOnce.Do(func() { lc.running = time.Now(); close(lc.runningCh) })
	}
}

func (c *churn) markGone(name string) {
	if lc := c.get(name); lc != nil {
		lc.goneOnce.Do(func() { lc.gone = time.Now(); close(lc.goneCh) })
	}
}

// run starts a lifecycle every 1/rate s until ctx ends.
func (c *churn) run(ctx context.Context, rate float64) {
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		name := fmt.Sprintf("%s-%d", c.prefix, c.seq.Add(1))
		lc := &lifecycle{name: name, runningCh: make(chan struct{}), goneCh: make(chan struct{})}
		c.mu.Lock()
		c.live[name] = lc
		c.all = append(c.all, lc)
		c.mu.Unlock()
		c.wg.Go(func() { c.live1(lc) })
	}
}

// live1 is one lifecycle. It runs to its end even after the churn stops: a
// pod left behind would be the next round's load.
func (c *churn) live1(lc *lifecycle) {
	ctx, cancel := context.WithTimeout(context.Background(), podRunTimeout+90*time.Second)
	defer cancel()
	pods := c.cs.CoreV1().Pods(podNamespace)
	no, zero := false, int64(0)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: lc.name, Labels: map[string]string{"app": "kpath-bench-pods"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &zero,
			Containers:                    []corev1.Container{{Name: "app", Image: c.image, ImagePullPolicy: corev1.PullNever}},
		},
	}
	lc.created = time.Now()
	if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
		lc.err, lc.gone = fmt.Errorf("create pod %s: %w", lc.name, err), time.Now()
		lc.goneOnce.Do(func() { close(lc.goneCh) })
		return
	}
	select {
	case <-lc.runningCh:
	case <-time.After(podRunTimeout):
	case <-ctx.Done():
	}
	lc.deleted = time.Now()
	if err := pods.Delete(ctx, lc.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		lc.err = fmt.Errorf("delete pod %s: %w", lc.name, err)
	}
	select {
	case <-lc.goneCh:
	case <-ctx.Done():
		lc.goneOnce.Do(func() {
			lc.err = errors.Join(lc.err, fmt.Errorf("pod %s: not gone %s after its delete", lc.name, time.Since(lc.deleted).Round(time.Second)))
			lc.gone = time.Now()
			close(lc.goneCh)
		})
	}
}

// drain waits for every lifecycle started to end.
func (c *churn) drain(ctx context.Context, max time.Duration) error {
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(max):
		return fmt.Errorf("pods of the round still not gone after %s", max)
	}
}

// ended lists every lifecycle the churn started (call after drain).
func (c *churn) ended() []*lifecycle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.all)
}

func reportLifecycles(w io.Writer, c config, l *lab, elapsed time.Duration, rs []lifeRound) {
	fmt.Fprintf(w, "- finished %s after %s; load average %s\n", time.Now().Format(time.RFC3339), elapsed.Round(time.Second), loadavg())
	fmt.Fprintf(w, "- %d rounds of %s, %s warm-up + %s measured each, pods created at %.1f/s, deleted once Running (grace 0); kpath-agent --export=%s --node-name=%s --kubeconfig=<lab> %s\n\n",
		c.rounds, strings.Join(c.modes, ", "), c.warmup, c.duration, c.podRate, c.kpathExport, l.node, strings.Join(c.agentFlags, " "))

	comps := append(slices.Clone(labComponents), "kpath-agent")
	fmt.Fprint(w, "## Per round\n\n| round | mode | lifecycles | never ran | startup p50 ms | p99 ms |")
	for _, comp := range comps {
		fmt.Fprintf(w, " %s ms | ", comp)
	}
	fmt.Fprint(w, " all ms/lifecycle | other load (cores) | API errors | notes |\n|")
	for range 6 + len(comps) + 4 {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w)
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %s | %d | %d | %.0f | %.0f |", r.round, r.mode, r.done, r.neverRan, ms(r.p50), ms(r.p99))
		for _, comp := range comps {
			fmt.Fprintf(w, " %.3f |", r.per(r.cpu[comp].total()))
		}
		note := ""
		if len(r.foreign) > 0 {
			note = "other BPF tracers: " + procList(r.foreign)
		}
		if r.failed > 0 {
			note += fmt.Sprintf(" first error: %v", r.err)
		}
		fmt.Fprintf(w, " %.3f | %.2f | %d | %s |\n", r.total(), r.otherCores(), r.failed, note)
	}

	fmt.Fprint(w, "\n## CPU per pod lifecycle, median [min–max] of rounds (ms)\n\n| component |")
	for _, m := range c.modes {
		fmt.Fprintf(w, " %s |", m)
	}
	fmt.Fprint(w, " added by kpath |\n|---|")
	for range c.modes {
		fmt.Fprint(w, "---|")
	}
	fmt.Fprintln(w, "---|")
	rows := append(slices.Clone(comps), "all")
	for _, comp := range rows {
		f := func(r lifeRound) float64 { return r.per(r.cpu[comp].total()) }
		if comp == "all" {
			f = lifeRound.total
		}
		fmt.Fprintf(w, "| %s |", comp)
		med := map[string]float64{}
		for _, m := range c.modes {
			s := summarize(values(byMode(rs, m), f))
			med[m] = s.med
			fmt.Fprintf(w, " %s |", s.fmt(3))
		}
		added := "—"
		if c.has(modeNone) && c.has(modeKpath) {
			d := med[modeKpath] - med[modeNone]
			added = fmt.Sprintf("%+.3f", d)
			if med[modeNone] > 0 {
				added += fmt.Sprintf(" (%+.1f %%)", 100*d/med[modeNone])
			}
		}
		fmt.Fprintf(w, " %s |\n", added)
	}
	if c.has(modeNone) && c.has(modeKpath) {
		ratios := paired(rs, modeKpath, lifeRound.total)
		fmt.Fprintf(w, "\nAll components and the agent, kpath/none within each round: %s\n", summarize(ratios).fmt(3))
		fmt.Fprintf(w, "Startup p50, kpath/none: %s\n", summarize(paired(rs, modeKpath, func(r lifeRound) float64 { return ms(r.p50) })).fmt(3))
	}
	ks := byMode(rs, modeKpath)
	if len(ks) == 0 {
		return
	}
	fmt.Fprint(w, "\n## What kpath saw, per lifecycle (median [min–max] of rounds)\n\n| measure | value |\n|---|---|\n")
	for _, comp := range tracedComponents {
		fmt.Fprintf(w, "| probe hits, %s | %s |\n", comp, summarize(values(ks, func(r lifeRound) float64 {
			return r.hits[comp] / float64(max(1, r.hitLifecycles))
		})).fmt(2))
	}
	fmt.Fprintf(w, "| probe hits, all | %s |\n", summarize(values(ks, func(r lifeRound) float64 {
		var sum float64
		for _, v := range r.hits {
			sum += v
		}
		return sum / float64(max(1, r.hitLifecycles))
	})).fmt(2))
	fmt.Fprintf(w, "| pod traces of the bench's pods | %s |\n", summarize(values(ks, func(r lifeRound) float64 { return float64(r.podRoots) / float64(r.done) })).fmt(3))
	fmt.Fprintf(w, "| of them complete | %s |\n", summarize(values(ks, func(r lifeRound) float64 { return float64(r.podComplete) / float64(r.done) })).fmt(3))
	fmt.Fprintf(w, "| traces of any kind (writes, Events, leases…) | %s |\n", summarize(values(ks, func(r lifeRound) float64 { return r.traces / float64(r.done) })).fmt(2))
	fmt.Fprintf(w, "| incomplete traces | %s |\n", summarize(values(ks, func(r lifeRound) float64 { return r.incomplete / float64(r.done) })).fmt(3))
	fmt.Fprintf(w, "| events dropped (all reasons) | %s |\n", summarize(values(ks, func(r lifeRound) float64 { return r.dropped / float64(r.done) })).fmt(3))
	fmt.Fprintln(w, "\nHits are counted between two refreshes of the agent's counters and divided by the lifecycles that ended between them; they include the Events about the pods and the lab's background writes (leases, node status) in that time.")
}
