package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const benchNamespace = "kpath-bench"

// snapshot is everything read at the edges of the measured window.
type snapshot struct {
	at                      time.Time // when the /proc CPU times were read
	scraped                 time.Time // when the agent's hit counters were refreshed
	api, etcd, agent, self  cpuTimes
	host                    hostCPU
	hits                    map[string]float64 // kpath_probe_hits_total by component
	probeHits               map[string]float64 // by probe
	traces, incomplete      float64
	dropped, exportDropped  float64
	sinkSpans, sinkRequests int64
	sinkBench               int64
	scrapeErr               error
	bpfRuntime              time.Duration // the agent's BPF programs: cumulative run time
	bpfRuns                 uint64        // and runs (with --bpf-stats)
}

// roundResult is one mode in one round.
type roundResult struct {
	round int
	mode  string

	window time.Duration
	ok     int
	fail   int
	err    error // first failure in the window
	lat    []time.Duration

	mean, p50, p99 time.Duration

	api, etcd, agent, self cpuTimes // CPU used in the window
	hostBusy, hostSteal    time.Duration

	hitCreates                         int                // creates between the two refreshes of the agent's hit counters
	hits                               map[string]float64 // probe hits in the window, by component
	probeHits                          map[string]float64 // by probe
	traces                             float64
	incomplete, dropped, exportDropped float64
	sinkSpans                          int64
	sinkBench                          int64         // kpath request spans of the bench's ConfigMaps
	bpfRuntime                         time.Duration // the agent's BPF program time in the window
	bpfRuns                            uint64

	apiRows, etcdRows string // catalogue rows the agent attached to the bench's processes

	foreignAgents []hostProc // other BPF tracers (kpath-agents, tests) alive during the round
	others        []hostProc // other kube-apiserver/etcd processes on the host
	apiUprobes    bool       // a uprobe fired in the bench's apiserver
	etcdUprobes   bool
	isolated      bool // ran under renamed copies (--isolate)
}

func (r roundResult) throughput() float64 { return float64(r.ok) / r.window.Seconds() }

func (r roundResult) perCreate(d time.Duration) float64 {
	if r.ok == 0 {
		return 0
	}
	return float64(d) / float64(time.Millisecond) / float64(r.ok)
}

func (r roundResult) apiCPUPerCreate() float64 { return r.perCreate(r.api.total()) }

// cpCPUPerCreate is the control plane's CPU per create: apiserver, etcd and
// (in kpath mode) the agent.
func (r roundResult) cpCPUPerCreate() float64 {
	return r.perCreate(r.api.total() + r.etcd.total() + r.agent.total())
}

// otherCores is the CPU the rest of the machine (not the bench, its etcd,
// apiserver or agent) used during the window, in cores.
func (r roundResult) otherCores() float64 {
	ours := r.api.total() + r.etcd.total() + r.agent.total() + r.self.total()
	return float64(r.hostBusy-ours) / float64(r.window)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// runRound starts a fresh etcd and kube-apiserver (and the agent for kpath),
// drives load, and stops everything it started before returning.
func runRound(ctx context.Context, env *benchEnv, round int, mode string) (res roundResult, err error) {
	res = roundResult{round: round, mode: mode, isolated: env.cfg.isolate}
	dir := filepath.Join(env.tmp, fmt.Sprintf("r%d-%s", round, mode))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return res, err
	}
	if !env.cfg.keep {
		defer os.RemoveAll(filepath.Join(dir, "etcd"))
	}

	etcd, etcdURL, err := startEtcd(ctx, env, dir)
	if err != nil {
		return res, err
	}
	defer etcd.stop(syscall.SIGTERM, 15*time.Second)

	tracing := ""
	if mode == modeNative {
		tracing = filepath.Join(dir, "tracing.yaml")
		if err := writeTracingConfig(tracing, env.sink.addr); err != nil {
			return res, err
		}
	}
	api, host, err := startAPIServer(ctx, env, dir, etcdURL, tracing)
	if err != nil {
		return res, err
	}
	defer api.stop(syscall.SIGTERM, 20*time.Second)

	rc := &rest.Config{
		Host:            host,
		BearerToken:     env.pki.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: env.pki.caPEM},
		QPS:             -1, // no client-side rate limit
		Burst:           1 << 20,
		Timeout:         30 * time.Second,
		ContentConfig:   rest.ContentConfig{ContentType: "application/vnd.kubernetes.protobuf"},
		UserAgent:       "kpath-bench",
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return res, err
	}
	err = waitFor(ctx, api, 120*time.Second, "ready", func() error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		b, err := cs.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		if err != nil {
			return fmt.Errorf("%v %s", err, strings.TrimSpace(string(b)))
		}
		return nil
	})
	if err != nil {
		return res, err
	}

	var ag *agent
	if mode == modeKpath {
		var extra []string
		if env.cfg.isolate {
			view := filepath.Join(dir, "proc")
			if err := env.procView(view, etcd.pid(), api.pid()); err != nil {
				return res, err
			}
			extra = append(extra, "--proc="+view)
		}
		targets := []target{{"kube-apiserver", api.pid()}, {"etcd", etcd.pid()}}
		if ag, err = startAgent(ctx, env, dir, targets, extra...); err != nil {
			return res, err
		}
		defer ag.stop()
	}

	nsCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = cs.CoreV1().Namespaces().Create(nsCtx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}, metav1.CreateOptions{})
	cancel()
	if err != nil {
		return res, fmt.Errorf("create namespace: %w", err)
	}

	agentPID := 0
	if ag != nil {
		agentPID = ag.pid()
	}
	snap := func() snapshot {
		s := snapshot{at: time.Now(), api: procCPU(api.pid()), etcd: procCPU(etcd.pid()), agent: procCPU(agentPID),
			self: procCPU(os.Getpid()), host: readHostCPU(),
			sinkSpans: env.sink.spans.Load(), sinkRequests: env.sink.requests.Load(), sinkBench: env.sink.benchRequests.Load()}
		if ag != nil && env.cfg.bpfStats {
			s.bpfRuntime, s.bpfRuns, _ = bpfProgStats(agentPID)
		}
		if ag != nil {
			m, at, err := scrapeAtTick(ctx, ag.metricsURL)
			s.scraped, s.scrapeErr = at, err
			if err == nil {
				s.hits = m.byLabel("kpath_probe_hits_total", "component")
				s.probeHits = m.byLabel("kpath_probe_hits_total", "probe")
				t := m.byLabel("kpath_traces_total", "complete")
				s.traces, s.incomplete = t["true"]+t["false"], t["false"]
				s.dropped = m.value("kpath_events_dropped_total", nil)
				s.exportDropped = m.value("kpath_export_dropped_spans_total", nil)
			}
		}
		return s
	}

	foreign := bpfTracers(agentPID)
	before, after, err := drive(ctx, cs, env.cfg, snap, &res)
	if err != nil {
		return res, err
	}
	foreign = append(foreign, bpfTracers(agentPID)...)
	if err := errors.Join(before.scrapeErr, after.scrapeErr); err != nil {
		return res, fmt.Errorf("scraping the agent's metrics: %w", err)
	}
	res.foreignAgents = dedup(foreign)
	if !env.cfg.isolate {
		res.others = findProcs([]string{"kube-apiserver", "etcd"}, api.pid(), etcd.pid())
	}
	res.apiUprobes, res.etcdUprobes = uprobesMapped(api.pid()), uprobesMapped(etcd.pid())

	res.window = after.at.Sub(before.at)
	res.api, res.etcd, res.agent, res.self = after.api.sub(before.api), after.etcd.sub(before.etcd), after.agent.sub(before.agent), after.self.sub(before.self)
	res.hostBusy, res.hostSteal = after.host.busy-before.host.busy, after.host.steal-before.host.steal
	res.hits = subMap(after.hits, before.hits)
	res.probeHits = subMap(after.probeHits, before.probeHits)
	res.traces, res.incomplete = after.traces-before.traces, after.incomplete-before.incomplete
	res.dropped, res.exportDropped = after.dropped-before.dropped, after.exportDropped-before.exportDropped
	res.sinkSpans = after.sinkSpans - before.sinkSpans
	res.sinkBench = after.sinkBench - before.sinkBench
	res.bpfRuntime, res.bpfRuns = after.bpfRuntime-before.bpfRuntime, after.bpfRuns-before.bpfRuns
	if mode == modeKpath && ag != nil {
		if perr := ag.exited(); perr != nil {
			return res, perr
		}
		res.apiRows, res.etcdRows = ag.attachedRows(api.pid()), ag.attachedRows(etcd.pid())
	}
	return res, nil
}

func dedup(ps []hostProc) []hostProc {
	seen := map[int]bool{}
	var out []hostProc
	for _, p := range ps {
		if !seen[p.pid] {
			seen[p.pid] = true
			out = append(out, p)
		}
	}
	return out
}

func subMap(a, b map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range a {
		out[k] = v - b[k]
	}
	return out
}

// scrapeAtTick returns the agent's metrics together with the moment its
// kpath_probe_hits_total was refreshed. The agent copies the BPF hit counters
// into its metrics on a 2 s ticker, so a single scrape is up to 2 s stale;
// polling until the value moves pins the refresh to ±25 ms.
func scrapeAtTick(ctx context.Context, url string) (metrics, time.Time, error) {
	poll := func() (metrics, time.Time, error) {
		t := time.Now()
		m, err := scrape(url)
		return m, t.Add(time.Since(t) / 2), err
	}
	m, prev, err := poll()
	if err != nil {
		return nil, time.Time{}, err
	}
	base := m.value("kpath_probe_hits_total", nil)
	deadline := prev.Add(6 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, time.Time{}, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		m, at, err := poll()
		if err != nil {
			return nil, time.Time{}, err
		}
		if m.value("kpath_probe_hits_total", nil) != base {
			return m, prev.Add(at.Sub(prev) / 2), nil
		}
		prev = at
	}
	return nil, time.Time{}, fmt.Errorf("kpath_probe_hits_total did not move in 6s under load")
}

// drive runs cfg.workers ConfigMap creators without pause through the
// warm-up and the measured window, snapping at both edges of the window.
// Throughput, latency and CPU per create use the creates that completed
// between the two snapshots' /proc reads; the agent's counters (probe hits,
// traces), read over HTTP a moment later (scrapeAtTick), are divided by the
// creates that completed between the two refreshes of those counters
// (hitCreates).
// benchOp is what the clients do (--op): create, get or list.
var benchOp = "create"

// seedObjects is how many ConfigMaps the readers of get and list read.
const seedObjects = 50

func drive(ctx context.Context, cs kubernetes.Interface, cfg config, snap func() snapshot, res *roundResult) (before, after snapshot, err error) {
	type done struct {
		end time.Time
		lat time.Duration
		err error
	}
	payload := map[string]string{"payload": strings.Repeat("x", 128)}
	ws := make([][]done, cfg.workers)
	var (
		wg   sync.WaitGroup
		stop atomic.Bool // no new creates; the ones in flight finish
	)
	cms := cs.CoreV1().ConfigMaps(benchNamespace)
	if benchOp != "create" {
		// What the readers read: made before the round's load.
		for i := range seedObjects {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("seed-%d", i)}, Data: payload}
			if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				return before, after, fmt.Errorf("seed ConfigMap %d: %w", i, err)
			}
		}
	}
	// One operation of worker w, its i-th.
	do := func(w, i int) error {
		var err error
		switch benchOp {
		case "get":
			_, err = cms.Get(ctx, fmt.Sprintf("seed-%d", (w*7+i)%seedObjects), metav1.GetOptions{})
		case "list":
			_, err = cms.List(ctx, metav1.ListOptions{})
		default:
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%d-%d", w, i)}, Data: payload}
			_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
		}
		return err
	}
	for w := range ws {
		wg.Go(func() {
			for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
				start := time.Now()
				err := do(w, i)
				end := time.Now()
				ws[w] = append(ws[w], done{end, end.Sub(start), err})
				if err != nil {
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}
	if err = sleepCtx(ctx, cfg.warmup); err == nil {
		before = snap()
		if err = sleepCtx(ctx, cfg.duration-time.Since(before.at)); err == nil {
			after = snap()
		}
	}
	stop.Store(true)
	wg.Wait()
	if err != nil {
		return before, after, err
	}
	for _, w := range ws {
		for _, d := range w {
			if in(d.end, before.scraped, after.scraped) && d.err == nil {
				res.hitCreates++
			}
			if !in(d.end, before.at, after.at) {
				continue
			}
			if d.err != nil {
				res.fail++
				if res.err == nil {
					res.err = d.err
				}
				continue
			}
			res.lat = append(res.lat, d.lat)
		}
	}
	res.ok = len(res.lat)
	if res.ok == 0 || res.fail > res.ok {
		return before, after, fmt.Errorf("%d creates, %d failures in the window; first: %v", res.ok, res.fail, res.err)
	}
	slices.Sort(res.lat)
	var sum time.Duration
	for _, l := range res.lat {
		sum += l
	}
	res.mean = sum / time.Duration(res.ok)
	res.p50, res.p99 = percentile(res.lat, 0.50), percentile(res.lat, 0.99)
	return before, after, nil
}

// percentile is the nearest-rank q-quantile of sorted.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}
