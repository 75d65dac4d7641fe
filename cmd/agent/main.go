// kpath-agent attaches uprobes to the Kubernetes control-plane processes of
// its host and exports one trace per object change.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // on the default mux, served only with --pprof-addr
	"net/url"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kpath/kpath/access"
	"github.com/kpath/kpath/correlate"
	"github.com/kpath/kpath/export"
	"github.com/kpath/kpath/k8smeta"
	"github.com/kpath/kpath/probes"
)

type config struct {
	export       string
	otlpEndpoint string
	otlpHeaders  map[string]string
	otlpInsecure bool
	hashKeyFile  string
	metricsAddr  string
	metricsAuth  string
	tlsCert      string
	tlsKey       string
	clientCA     string
	procRoot     string
	nodeNetNS    string
	scan         time.Duration
	detail       bool
	detailRows   []string
	programs     []string
	operators    bool
	recent       int
	ringBytes    uint
	maxWait      time.Duration
	logFormat    string
	logLevel     string
	nodeName     string
	keyPrefixes  []string
	pprofAddr    string
	kubeconfig   string
	metadata     string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kpath-agent:", err)
		os.Exit(1)
	}
}

// commaList splits a comma-separated flag value, dropping blanks.
// parseHeaders reads OTEL_EXPORTER_OTLP_HEADERS' format: key=value pairs,
// comma-separated, values URL-encoded.
func parseHeaders(v string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range commaList(v) {
		k, val, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		dec, err := url.QueryUnescape(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", k, err)
		}
		out[strings.ToLower(k)] = dec
	}
	return out, nil
}

func commaList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("kpath-agent", flag.ContinueOnError)
	fs.StringVar(&c.export, "export", "console", "where traces go: otlp, jsonl (one span a line on stdout) or console (a waterfall per object); several, comma-separated, e.g. console,otlp (jsonl and console share stdout: one of them)")
	fs.StringVar(&c.otlpEndpoint, "otlp-endpoint", envOr("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317"), "OTLP gRPC endpoint (host:port) for --export=otlp")
	headers := fs.String("otlp-headers", os.Getenv("OTEL_EXPORTER_OTLP_HEADERS"), "gRPC metadata sent with every upload, key=value,... (as OTEL_EXPORTER_OTLP_HEADERS; values URL-encoded), e.g. an API key")
	fs.BoolVar(&c.otlpInsecure, "otlp-insecure", true, "talk plain gRPC to the OTLP endpoint, without TLS")
	fs.StringVar(&c.hashKeyFile, "hash-names-key-file", "", "replace object names in every exported span (and /api/v1/traces) by a keyed hash; the file holds the key (at least 16 bytes, the same on every node, e.g. from a Secret)")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "127.0.0.1:9464", "serve /metrics, /healthz and /readyz here; empty to disable")
	fs.StringVar(&c.metricsAuth, "metrics-auth", "auto", "who may read /metrics and /api/v1/traces (object names, URL paths): kubernetes (HTTPS; callers authenticated by client certificate or TokenReview, authorized by SubjectAccessReview (get on the path /metrics; get on the resource traces.kpath.dev for /api/v1/traces), as Kubernetes components do), none (anyone who reaches the address), or auto: none on a loopback address, kubernetes on any other. /healthz and /readyz are always open")
	fs.StringVar(&c.tlsCert, "tls-cert-file", "", "serving certificate of --metrics-auth=kubernetes (PEM; with --tls-private-key-file); empty: one the agent signs itself at start")
	fs.StringVar(&c.tlsKey, "tls-private-key-file", "", "private key of --tls-cert-file")
	fs.StringVar(&c.clientCA, "client-ca-file", "", "CA bundle that verifies client certificates under --metrics-auth=kubernetes; empty: the one kube-apiserver publishes in kube-system/extension-apiserver-authentication")
	fs.StringVar(&c.procRoot, "proc", "/proc", "the host's /proc (the agent needs hostPID)")
	fs.StringVar(&c.nodeNetNS, "node-netns", "", "follow only the processes in this network namespace (a file such as /proc/self/ns/net or /run/netns/NAME): for nodes that share one host's PID namespace, as the lab's second node does; empty: every process")
	fs.DurationVar(&c.scan, "scan-interval", time.Second, "how often to look for new or restarted components")
	fs.BoolVar(&c.detail, "detail", false, "also attach detail rows (more spans, more probe hits on hot paths)")
	fs.Func("detail-rows", "attach these detail rows only, comma-separated row IDs (e.g. etcd.wal.fsync: etcd's disk syncs)", func(v string) error {
		c.detailRows = append(c.detailRows, commaList(v)...)
		return probes.CheckDetailRows(probes.Catalogue, c.detailRows)
	})
	fs.BoolVar(&c.operators, "operators", true, "follow every program that links controller-runtime, found by its build info, with no flag naming it: its reconciles and its informers' receipts (false: only the programs --client-go-programs names)")
	fs.Func("client-go-programs", "also follow these operators and controllers (executable base names, comma-separated): their client-go informers' receipts give their watch lag", func(v string) error {
		c.programs = append(c.programs, commaList(v)...)
		return nil
	})
	fs.IntVar(&c.recent, "recent-traces", export.DefaultRecentTraces, "keep this many recent traces in memory for `kubectl kpath explain` (GET /api/v1/traces on the metrics address); 0 turns the endpoint off")
	fs.UintVar(&c.ringBytes, "ring-bytes", 4<<20, "ring buffer size in bytes (power of two, multiple of the page size)")
	fs.DurationVar(&c.maxWait, "max-wait", 5*time.Second, "emit a write incomplete when its stages are still missing after this long")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name, put on the OTLP resource; a pod bound to another node is done here once bound, and that node's agent adds its kubelet's part to the same trace")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig for pod metadata (node, owner); empty: the pod's service account when in a cluster")
	fs.StringVar(&c.metadata, "metadata", "auto", "pod metadata from the API server: auto (when in a cluster or --kubeconfig is set), on, or off")
	fs.StringVar(&c.pprofAddr, "pprof-addr", "", "serve Go's /debug/pprof here (off when empty; never expose it)")
	prefixes := fs.String("key-prefix", "", "export only traces of objects whose etcd key starts with one of these comma-separated prefixes (e.g. /registry/pods/default/); empty: all")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.keyPrefixes = commaList(*prefixes)
	var err error
	if c.otlpHeaders, err = parseHeaders(*headers); err != nil {
		return c, fmt.Errorf("--otlp-headers: %w", err)
	}
	stdout := 0
	for _, e := range commaList(c.export) {
		switch e {
		case "otlp":
		case "jsonl", "console":
			stdout++
		default:
			return c, fmt.Errorf("--export=%q: want otlp, jsonl or console, or several of them comma-separated", c.export)
		}
	}
	if stdout > 1 || len(commaList(c.export)) == 0 {
		return c, fmt.Errorf("--export=%q: jsonl and console both write stdout: choose one (with otlp beside it if you like)", c.export)
	}
	switch c.metadata {
	case "auto", "on", "off":
	default:
		return c, fmt.Errorf("--metadata=%q: want auto, on or off", c.metadata)
	}
	if c.metricsAuth, err = resolveMetricsAuth(c.metricsAuth, c.metricsAddr); err != nil {
		return c, err
	}
	return c, nil
}

// resolveMetricsAuth turns auto into what it means for addr: the endpoints
// list object names, so they are open only on a loopback address.
func resolveMetricsAuth(mode, addr string) (string, error) {
	switch mode {
	case "kubernetes", "none":
		return mode, nil
	case "auto":
		if _, _, err := net.SplitHostPort(addr); addr == "" || err != nil || loopbackOnly(addr) {
			// No endpoints, or --metrics-addr's own error when it listens.
			return "none", nil
		}
		return "kubernetes", nil
	default:
		return "", fmt.Errorf("--metrics-auth=%q: want kubernetes, none or auto", mode)
	}
}

// loopbackOnly says whether addr (host:port) is reachable from this host only.
func loopbackOnly(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newLogger(c config) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	o := &slog.HandlerOptions{Level: lvl}
	switch c.logFormat {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, o)), nil
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, o)), nil
	}
	return nil, fmt.Errorf("--log-format=%q: want text or json", c.logFormat)
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "doctor" {
		return runDoctor(args[1:])
	}
	c, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	metrics := export.NewMetrics(nil)
	exp, err := newExporter(ctx, c, metrics)
	if err != nil {
		return err
	}
	// Recent traces stay in memory for `kubectl kpath explain` (GET /api/v1/traces).
	var recent *export.Recent
	if c.recent > 0 {
		recent = export.NewRecent(export.RecentOptions{Node: c.nodeName, MaxTraces: c.recent})
		exp = export.Tee(exp, recent)
	}
	if c.hashKeyFile != "" {
		key, err := os.ReadFile(c.hashKeyFile)
		if err != nil {
			return fmt.Errorf("--hash-names-key-file: %w", err)
		}
		if exp, err = export.HashNames(exp, bytes.TrimSpace(key)); err != nil {
			return fmt.Errorf("--hash-names-key-file %s: %w", c.hashKeyFile, err)
		}
		log.Info("object names hashed in exported spans", "key_file", c.hashKeyFile)
	}
	tracer, err := probes.NewTracer(probes.Options{Detail: c.detail, DetailRows: c.detailRows, ClientGoPrograms: c.programs, Operators: c.operators, NetNS: c.nodeNetNS, RingBytes: uint32(c.ringBytes), Logger: log})
	if err != nil {
		return err
	}
	defer tracer.Close()

	if c.pprofAddr != "" {
		go func() {
			if err := http.ListenAndServe(c.pprofAddr, nil); err != nil {
				log.Error("pprof server", "addr", c.pprofAddr, "err", err)
			}
		}()
	}
	var ready atomic.Bool
	if c.metricsAddr != "" {
		guard, tlsCfg, err := endpointAccess(ctx, c, metrics, log)
		if err != nil {
			return err
		}
		if err := serve(ctx, c.metricsAddr, metrics, &ready, recent, guard, tlsCfg); err != nil {
			return err
		}
	}

	meta, err := podMetadata(ctx, c, log)
	if err != nil {
		return err
	}
	// kube-controller-manager's syncs, in the traces of the writes they
	// acted on; kept 10 min to name the creator of the pods they made.
	syncs := correlate.NewSyncs(10*time.Minute, func(s correlate.Sync) {
		if selected(s.Trace, c.keyPrefixes) {
			exp.Export(s.Trace)
		}
	})
	// Whether a kube-apiserver is followed: without one (a worker node's
	// agent) a pod's part here ends with its kubelet's.
	var apiservers atomic.Int32
	seesAPIServer := func() bool { return apiservers.Load() > 0 }
	pods := correlate.NewPods(correlate.PodOptions{Meta: meta, Creator: syncs.Creator, Node: c.nodeName, SeesAPIServer: seesAPIServer}, func(pt correlate.PodTrace) {
		if !pt.Late {
			metrics.TraceDone(pt.Trace.Complete)
		}
		for _, st := range pt.Stages {
			metrics.ObserveStage(st.Stage, "pods", st.Component, st.Duration)
		}
		if selected(pt.Trace, c.keyPrefixes) {
			exp.Export(pt.Trace)
		}
	})
	// A webhook server's answer to a call another node's agent sees goes
	// out alone, where that call's span links.
	alone := func(t correlate.Trace) {
		if selected(t, c.keyPrefixes) {
			exp.Export(t)
		}
	}
	reconciles := correlate.NewReconciles(correlate.ReconcileOptions{SeesAPIServer: seesAPIServer}, func(r correlate.Reconcile) {
		wait := time.Duration(-1)
		if !r.Queued.IsZero() {
			wait = r.Start.Sub(r.Queued)
		}
		metrics.ObserveReconcile(r.Component, r.Controller, r.Result, r.End.Sub(r.Start), wait)
		if selected(r.Trace, c.keyPrefixes) {
			exp.Export(r.Trace)
		}
	})

	writes := correlate.NewWrites(correlate.Options{MaxWait: c.maxWait, Alone: alone}, func(w correlate.Write) {
		t := w.Trace
		metrics.TraceDone(t.Complete)
		observeStages(metrics, t)
		if selected(t, c.keyPrefixes) {
			exp.Export(t)
		}
		pods.AddWrite(w, time.Now())
		syncs.AddWrite(w)
		reconciles.AddWrite(w, time.Now())
	})

	// An open span is given up (counted) after as long as a pod may take
	// to start: a container start holds its image pull.
	pairs := correlate.NewPairs(correlate.PodOptions{}.WithDefaults().MaxWait, 0)
	errc := make(chan error, 2)
	go func() {
		// Ready once a whole scan attached everything it found: a pod
		// created before then would miss the components not yet attached.
		errc <- tracer.Watch(ctx, c.procRoot, c.scan, func(e probes.AttachEvent) {
			if e.Process != nil && e.Process.Component == probes.KubeAPIServer {
				if e.Detached {
					apiservers.Add(-1)
				} else {
					apiservers.Add(1)
				}
			}
			reportAttach(log, metrics, e)
		},
			func() { ready.Store(true) })
	}()
	go func() {
		// Each event goes to the trace its row feeds, once Pairs has made
		// the spans the catalogue builds from two entry hits.
		dispatch := func(ev probes.Event) {
			feeds, now := probes.FeedsWrites, time.Now()
			if ev.Row != nil {
				feeds = ev.Row.Feeds
			}
			if ev.Stage == probes.StageAdmission && ev.Component == probes.KubeAPIServer {
				// Every call, whether its write happens or not (a webhook
				// that rejects it, a dry run).
				metrics.ObserveWebhook(ev.Webhook, ev.WebhookType, ev.Duration())
			}
			if feeds&probes.FeedsWrites != 0 {
				writes.Add(ev, now)
			}
			if feeds&probes.FeedsPods != 0 {
				pods.Add(ev, now)
			}
			if feeds&probes.FeedsReconciles != 0 {
				reconciles.Add(ev, now)
			}
			if feeds&probes.FeedsSyncs != 0 {
				syncs.Add(ev, now)
			}
		}
		errc <- tracer.Read(ctx, func(ev probes.Event) { pairs.Add(ev, time.Now(), dispatch) })
	}()

	log.Info("kpath agent started", "export", c.export, "proc", c.procRoot, "detail", c.detail, "detail_rows", c.detailRows, "metrics", c.metricsAddr)
	// Every flush is a wakeup: as often as the reader looks at the ring.
	flush := time.NewTicker(probes.PollInterval)
	defer flush.Stop()
	stats := time.NewTicker(2 * time.Second)
	defer stats.Stop()
	var counters dropCounters
	for {
		select {
		case <-ctx.Done():
			// A stuck shutdown must not keep a DaemonSet pod Terminating.
			time.AfterFunc(20*time.Second, func() {
				log.Error("shutdown took longer than 20s; exiting without it")
				os.Exit(1)
			})
			writes.Flush(time.Now().Add(c.maxWait)) // everything still waiting goes out as it is
			syncs.Flush(time.Now().Add(time.Hour))  // before the pods: they ask it for their creators
			pods.Flush(time.Now().Add(24 * time.Hour))
			reconciles.Flush(time.Now().Add(time.Hour))
			counters.update(log, metrics, tracer, pairs, writes, pods, reconciles, syncs)
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return exp.Close(sctx)
		case err := <-errc:
			if err != nil {
				return err
			}
		case now := <-flush.C:
			pairs.Flush(now)
			writes.Flush(now)
			syncs.Flush(now)
			pods.Flush(now)
			reconciles.Flush(now)
		case <-stats.C:
			counters.update(log, metrics, tracer, pairs, writes, pods, reconciles, syncs)
		}
	}
}

// podMetadata starts the pod informer that adds node and owner to pod
// traces. In a cluster (or with --kubeconfig) it is on by default; a failure
// then stops the agent, since --metadata=off is the way to run without it.
func podMetadata(ctx context.Context, c config, log *slog.Logger) (func(string) (correlate.PodMeta, bool), error) {
	if c.metadata == "off" || (c.metadata == "auto" && c.kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "") {
		log.Info("pod metadata off: not in a cluster and no --kubeconfig (pod traces carry what the probes see)")
		return nil, nil
	}
	scope := k8smeta.Scope{Node: c.nodeName}
	pods, err := k8smeta.NewPodsFromKubeconfig(ctx, c.kubeconfig, scope)
	if err != nil {
		return nil, fmt.Errorf("pod metadata (--metadata=off to run without it): %w", err)
	}
	log.Info("pod metadata on", "node_scope", scope.Node)
	return func(uid string) (correlate.PodMeta, bool) {
		p, ok := pods.ByUID(types.UID(uid))
		return correlate.PodMeta{Node: p.Node, OwnerKind: p.OwnerKind, OwnerName: p.OwnerName}, ok
	}, nil
}

func newExporter(ctx context.Context, c config, m *export.Metrics) (export.Exporter, error) {
	var out []export.Exporter
	for _, e := range commaList(c.export) {
		switch e {
		case "jsonl":
			out = append(out, export.NewJSONL(os.Stdout))
		case "console":
			out = append(out, export.NewConsole(os.Stdout))
		case "otlp":
			res := map[string]string{}
			if c.nodeName != "" {
				res["k8s.node.name"] = c.nodeName
			}
			o, err := export.NewOTLP(ctx, export.OTLPConfig{Endpoint: c.otlpEndpoint, Insecure: c.otlpInsecure, Headers: c.otlpHeaders, Resource: res, AgentVersion: agentVersion()}, m)
			if err != nil {
				return nil, err
			}
			out = append(out, o)
		}
	}
	if len(out) == 1 {
		return out[0], nil
	}
	return export.Tee(out...), nil
}

// agentVersion is the module version the agent was built from, or the VCS
// revision of a local build.
func agentVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			return "dev-" + s.Value[:12]
		}
	}
	return ""
}

// endpointAccess is the guard and TLS of the endpoints under
// --metrics-auth=kubernetes, and nil for both under none.
func endpointAccess(ctx context.Context, c config, m *export.Metrics, log *slog.Logger) (*access.Guard, *tls.Config, error) {
	if c.metricsAuth == "none" {
		if !loopbackOnly(c.metricsAddr) {
			log.Warn("the agent's endpoints are open to anyone who reaches them (--metrics-auth=none): /api/v1/traces lists object names and URL paths", "addr", c.metricsAddr)
		}
		return nil, nil, nil
	}
	if c.kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return nil, nil, fmt.Errorf("--metrics-addr=%s: --metrics-auth=kubernetes asks the API server who callers are and what they may read, and this agent has no API server: run it in a cluster, give --kubeconfig, listen on a loopback address, or serve the endpoints to anyone with --metrics-auth=none", c.metricsAddr)
	}
	cs, err := k8smeta.NewClient(c.kubeconfig)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics-auth=kubernetes: %w", err)
	}
	tlsCfg, cert, err := access.ServingTLS(c.tlsCert, c.tlsKey)
	if err != nil {
		return nil, nil, err
	}
	cas := &access.CAs{}
	if err := access.WatchClientCA(ctx, cs, c.clientCA, time.Minute, cas, log); err != nil {
		return nil, nil, err
	}
	for _, e := range guardedEndpoints {
		m.InitEndpoint(e, access.Results)
	}
	log.Info("endpoints served over HTTPS to callers the API server authenticates and authorizes", "addr", c.metricsAddr, "certificate", cert, "endpoints", guardedEndpoints)
	return access.NewGuard(access.Options{Client: cs, ClientCAs: cas, Observe: m.EndpointRequest}), tlsCfg, nil
}

// tracesPermission is what reading /api/v1/traces takes: a resource no API
// serves, since RBAC's default system:discovery lets everyone get /api/*.
var tracesPermission = access.Resource("kpath.dev", "traces")

// guardedEndpoints are every endpoint but the health probes.
var guardedEndpoints = []string{"/metrics", "/api/v1/traces"}

func serve(ctx context.Context, addr string, m *export.Metrics, ready *atomic.Bool, recent *export.Recent, guard *access.Guard, tlsCfg *tls.Config) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", guard.Require("/metrics", access.Path("/metrics"), m.Handler()))
	var traces http.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "recent traces are off on this agent (--recent-traces=0)", http.StatusNotFound)
	})
	if recent != nil {
		traces = recent.Handler()
	}
	mux.Handle("/api/v1/traces", guard.Require("/api/v1/traces", tracesPermission, traces))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "no process scan finished yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-addr: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if tlsCfg != nil {
		l = tls.NewListener(l, tlsCfg)
	}
	go srv.Serve(l)
	go func() { <-ctx.Done(); srv.Close() }()
	return nil
}

func reportAttach(log *slog.Logger, m *export.Metrics, e probes.AttachEvent) {
	comp := string(e.Found.Component)
	if e.Detached {
		log.Info("process gone, probes detached", "component", comp, "pid", e.Found.PID, "exe", e.Found.Exe)
		m.ForgetProcess(comp, e.Found.PID)
		return
	}
	if e.Process == nil {
		log.Error("cannot trace process", "component", comp, "pid", e.Found.PID, "exe", e.Found.Exe, "err", e.Err)
		m.AttachError(comp, "")
		return
	}
	p := e.Process
	var attached, skipped, slowEntry []string
	for _, r := range p.Rows {
		switch r.State {
		case probes.RowAttached:
			attached = append(attached, r.Row.ID)
			m.AttachOK(comp, r.Row.ID)
			if !r.EntryAtPush {
				slowEntry = append(slowEntry, r.Row.ID)
			}
		case probes.RowFailed:
			log.Error("probe not attached", "component", comp, "pid", p.PID, "exe", p.Exe, "probe", r.Row.ID, "symbol", r.Row.Symbol, "err", r.Err)
			m.AttachError(comp, r.Row.ID)
		case probes.RowNotApplicable:
			skipped = append(skipped, r.Row.ID)
			log.Info("probe does not apply to this binary", "component", comp, "pid", p.PID, "probe", r.Row.ID, "reason", r.Err)
		case probes.RowNotCovered:
			// Its stage will be missing from every trace of this process:
			// as loud as a failure, and counted as one.
			skipped = append(skipped, r.Row.ID)
			log.Error("probe not covered for this version: its stage is missing from this process's traces", "component", comp, "pid", p.PID, "exe", p.Exe, "probe", r.Row.ID, "symbol", r.Row.Symbol, "version", r.Version, "err", r.Err)
			m.AttachError(comp, r.Row.ID)
		}
	}
	m.SetAttached(comp, p.PID, len(attached))
	if len(attached) == 0 {
		log.Error("no probe attached: process not traced", "component", comp, "pid", p.PID, "exe", p.Exe, "go", p.GoVersion, "err", e.Err)
		return
	}
	log.Info("attached", "component", comp, "pid", p.PID, "exe", p.Exe, "go", p.GoVersion,
		"probes", len(attached), "not_attached", len(skipped), "rows", strings.Join(attached, ","),
		// Entry probes not on an emulated instruction cost a single-step each.
		"entry_not_at_push", strings.Join(slowEntry, ","))
}

// dropCounters turns the absolute drop counts of BPF and the correlator
// into counter increments.
type dropCounters struct {
	last map[string]uint64
	// reads: each row's read stats at the last check, and the rows already
	// reported broken.
	reads  map[string]probes.ReadStats
	broken map[string]bool
}

// warnBroken logs, once, a row whose captures failed in nearly every event
// since the last check: it reads a layout this binary does not have, and
// what it reports is missing or wrong.
func (d *dropCounters) warnBroken(log *slog.Logger, rs probes.ReadStats) {
	if d.reads == nil {
		d.reads, d.broken = map[string]probes.ReadStats{}, map[string]bool{}
	}
	k := string(rs.Component) + "/" + rs.Row
	delta := rs.Since(d.reads[k])
	d.reads[k] = rs
	for _, f := range probes.BrokenReads(delta) {
		if bk := k + "/" + f.String(); !d.broken[bk] {
			d.broken[bk] = true
			log.Error("catalogue row reads fail: the binary's layout differs from the row's, its "+f.String()+" is missing from every event",
				"component", rs.Component, "row", rs.Row, "field", f.String(), "failed", delta.Unread[f], "events", delta.Events,
				"fix", "this version needs a row of its own (docs/probe-points.md)")
		}
	}
}

func (d *dropCounters) update(log *slog.Logger, m *export.Metrics, t *probes.Tracer, pairs *correlate.Pairs, w *correlate.Writes, p *correlate.Pods, r *correlate.Reconciles, s *correlate.Syncs) {
	for k, n := range pairs.Unjoined() {
		m.SetUnjoined(k.Row, k.Reason, n)
	}
	for _, u := range []map[correlate.Unjoined]uint64{w.Unjoined(), p.Unjoined(), r.Unjoined(), s.Unjoined()} {
		for k, n := range u {
			m.SetUnjoined(k.Row, k.Reason, n)
		}
	}
	for _, rs := range t.ReadStats() {
		if rs.Filtered > 0 {
			m.SetUnjoined(rs.Row, "filtered", rs.Filtered)
		}
		for f, n := range rs.Unread {
			m.SetReadErrors(rs.Row, f.String(), n)
		}
		d.warnBroken(log, rs)
	}
	if d.last == nil {
		d.last = map[string]uint64{}
	}
	now := map[string]uint64{}
	if drops, err := t.Drops(); err == nil {
		for k, v := range drops {
			now[k] = v
		}
	} else {
		log.Warn("read BPF drop counters", "err", err)
	}
	de := t.DecodeErrors()
	now["decode_short"], now["decode_stale_slot"] = de.Short, de.StaleSlot
	st := w.Stats()
	now["timeline_evicted"] = st.Evicted
	ps := p.Stats()
	now["pod_evicted"], now["pod_stages_disordered"] = ps.Evicted, ps.Disordered
	// Not lost, but less exact: the container-start stage ended at the CRI reply.
	now["pod_runtime_start_unread"] = ps.StartedByCRI
	// A pod whose owner's controller kpath follows, created while no sync
	// of that owner was seen: its trace names no creator.
	now["pod_creator_unknown"] = s.CreatorLookups()["no-sync"]
	if n, err := t.SweepStash(time.Minute); err == nil {
		now["stash_expired"] = d.last["stash_expired"] + uint64(n)
	}
	for k, v := range now {
		last, seen := d.last[k]
		switch {
		case v > last:
			m.Drop(k, v-last)
		case !seen:
			m.Drop(k, 0) // the reason's series exists from the start, at 0
		}
		d.last[k] = v
	}
	if hits, err := t.Hits(); err == nil {
		type row struct{ comp, probe string }
		sum := map[row]uint64{}
		for _, h := range hits {
			sum[row{string(h.Component), h.Row}] += h.Hits
		}
		for r, n := range sum {
			m.SetProbeHits(r.comp, r.probe, n)
		}
	}
}

// selected says whether a trace's object passes --key-prefix. Filtering
// happens after the join, so metrics still see every write.
func selected(t correlate.Trace, prefixes []string) bool {
	if len(prefixes) == 0 {
		return true
	}
	if len(t.Spans) == 0 {
		return false
	}
	key, _ := t.Spans[0].Attr(correlate.AttrKey).(string)
	for _, p := range prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

func observeStages(m *export.Metrics, t correlate.Trace) {
	for i := range t.Spans {
		s := &t.Spans[i]
		stage, _ := s.Attr(correlate.AttrStage).(string)
		comp, _ := s.Attr(correlate.AttrComponent).(string)
		res, _ := s.Attr(correlate.AttrResource).(string)
		m.ObserveStage(stage, res, comp, s.End.Sub(s.Start))
	}
}
