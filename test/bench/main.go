// Command bench measures what kpath-agent costs kube-apiserver, next to the
// apiserver's own OpenTelemetry tracing, as ratios taken in one run.
//
// It starts its own etcd and kube-apiserver on free 127.0.0.1 ports (never the
// lab's), and for every round and mode (none, kpath, native) a fresh etcd data
// dir and a fresh apiserver: "kpath" adds kpath-agent (default flags, OTLP to
// an in-process sink that discards), "native" restarts the apiserver with
// --tracing-config-file at 100 % sampling to the same sink. C client-go workers
// create ConfigMaps for a warm-up and then a measured window; the report has
// throughput, latency and CPU per create (from /proc/PID/stat) per mode, as
// medians over interleaved rounds, and the ratios between modes.
//
//	sudo go run ./test/bench [--rounds=3 --duration=20s --warmup=5s --workers=8]
//
// It needs root: the agent loads BPF programs.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Modes, in the order a round runs them by default.
const (
	modeNone   = "none"
	modeKpath  = "kpath"
	modeNative = "native"
)

type config struct {
	etcdBin      string
	apiserverBin string
	agentBin     string
	modes        []string
	rounds       int
	duration     time.Duration
	warmup       time.Duration
	workers      int
	kpathExport  string
	agentFlags   []string
	workDir      string
	keep         bool
	attachWait   time.Duration
	waitClean    time.Duration
	includeDirty bool
	isolate      bool
	bpfStats     bool
	podRate      float64 // --op=pods: lifecycles started a second; --op=scale: pods created a second
	scaleNodes   int
	scalePods    int
	scaleLinger  time.Duration
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func cacheDir() string {
	if d := os.Getenv("KPATH_CACHE_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "kpath")
}

// The lab's default set (test/lab/versions.env), which make lab-up builds.
// docs/benchmarks.md says which set each of its results ran on.
const (
	labEtcd       = "v3.7.3"
	labKubernetes = "v1.37.2"
)

func parseFlags() (config, error) {
	var c config
	cache := cacheDir()
	flag.StringVar(&c.etcdBin, "etcd", filepath.Join(cache, "bin/normal/"+labEtcd+"/etcd"), "etcd binary (e.g. the release flavour under "+filepath.Join(cache, "bin/release")+")")
	flag.StringVar(&c.apiserverBin, "apiserver", filepath.Join(cache, "bin/normal/"+labKubernetes+"/kube-apiserver"), "kube-apiserver binary")
	flag.StringVar(&c.agentBin, "agent", "", "kpath-agent binary; empty: go build ./cmd/agent into the temp dir")
	modes := flag.String("modes", "none,kpath,native", "modes each round runs, in this order")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds; each runs every mode once")
	flag.DurationVar(&c.duration, "duration", 20*time.Second, "measured window per round and mode")
	flag.DurationVar(&c.warmup, "warmup", 5*time.Second, "load before the measured window (not counted)")
	flag.IntVar(&c.workers, "workers", 8, "concurrent clients")
	flag.StringVar(&benchOp, "op", "create", "what the clients do: create (ConfigMaps), get (one of "+fmt.Sprint(seedObjects)+" ConfigMaps made before the round), list (the namespace's ConfigMaps), pods: pod lifecycles on the running lab (make lab-up), modes none and kpath; or scale: kwok's fake nodes and many pods on the running lab, the agent's RSS and CPU as they grow")
	flag.Float64Var(&c.podRate, "pod-rate", 2, "--op=pods: pods created a second (each deleted once Running); --op=scale: default 50")
	flag.IntVar(&c.scaleNodes, "scale-nodes", 500, "--op=scale: kwok's fake nodes")
	flag.IntVar(&c.scalePods, "scale-pods", 10000, "--op=scale: pods created (multiple of 1000: the agent is read at every 1000)")
	flag.DurationVar(&c.scaleLinger, "scale-linger", 5*time.Minute+30*time.Second, "--op=scale: after the pods are deleted, how long to wait before reading the agent again (past the pod correlator's 5 min linger); 0: not read")
	flag.StringVar(&c.kpathExport, "kpath-export", "otlp", "kpath-agent's exporter: otlp (to the in-process sink that discards) or jsonl (stdout to /dev/null)")
	agentFlags := flag.String("agent-flags", "", "extra kpath-agent flags, space-separated (e.g. --detail)")
	flag.StringVar(&c.workDir, "workdir", "", "parent of the temp dir (etcd data, certs, logs); default $TMPDIR")
	flag.BoolVar(&c.keep, "keep", false, "keep the temp dir (logs) after the run")
	flag.BoolVar(&c.isolate, "isolate", true, "run etcd and kube-apiserver as renamed copies, invisible to other kpath-agents and kpath tests on the host, and show the bench's agent only them (--proc); false: usual names, and the agent attaches to every apiserver and etcd on the host")
	flag.BoolVar(&c.bpfStats, "bpf-stats", true, "turn on the kernel's BPF run-time statistics during the run (BPF_ENABLE_STATS) to split the cost of a probe hit into the BPF program and the rest (trap, single-step)")
	flag.BoolVar(&c.includeDirty, "include-dirty", false, "keep rounds that another BPF tracer probed in the medians and ratios")
	flag.DurationVar(&c.waitClean, "wait-clean", 0, "before each round, wait for other BPF tracers (kpath-agents, kpath tests) on the host to go away, at most this long over the whole run; they put uprobes in the bench's processes too")
	flag.DurationVar(&c.attachWait, "attach-timeout", 90*time.Second, "how long to wait for the agent to attach")
	flag.Parse()
	if benchOp == "pods" {
		// A lifecycle takes seconds, not milliseconds: a longer window, and
		// a warm-up that lets the churn reach its steady state.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			c.duration = 60 * time.Second
		}
		if !set["warmup"] {
			c.warmup = 15 * time.Second
		}
		if !set["modes"] {
			*modes = "none,kpath"
		}
		if c.podRate <= 0 {
			return c, errors.New("--pod-rate must be positive")
		}
	}
	if benchOp == "scale" {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["pod-rate"] {
			c.podRate = 50
		}
		if !set["warmup"] {
			c.warmup = 10 * time.Second
		}
		*modes = "kpath"
		if c.scaleNodes < 1 || c.scalePods < scaleStep || c.scalePods%scaleStep != 0 || c.podRate <= 0 {
			return c, fmt.Errorf("--op=scale: --scale-nodes must be positive, --scale-pods a multiple of %d, --pod-rate positive", scaleStep)
		}
	}
	if flag.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	for _, m := range strings.Split(*modes, ",") {
		switch m = strings.TrimSpace(m); m {
		case modeNone, modeKpath, modeNative:
			c.modes = append(c.modes, m)
		case "":
		default:
			return c, fmt.Errorf("--modes: unknown mode %q (want none, kpath, native)", m)
		}
	}
	if len(c.modes) == 0 {
		return c, errors.New("--modes: no mode")
	}
	if c.rounds < 1 || c.workers < 1 || c.duration <= 0 || c.warmup < 0 {
		return c, errors.New("--rounds, --workers and --duration must be positive, --warmup not negative")
	}
	switch benchOp {
	case "create", "get", "list":
	case "scale":
	case "pods":
		if c.has(modeNative) {
			return c, errors.New("--op=pods compares none and kpath: native tracing covers kube-apiserver alone, not a pod's chain")
		}
	default:
		return c, fmt.Errorf("--op=%q: want create, get, list, pods or scale", benchOp)
	}
	if c.kpathExport != "otlp" && c.kpathExport != "jsonl" {
		return c, fmt.Errorf("--kpath-export=%q: want otlp or jsonl", c.kpathExport)
	}
	c.agentFlags = strings.Fields(*agentFlags)
	return c, nil
}

func (c config) has(mode string) bool {
	for _, m := range c.modes {
		if m == mode {
			return true
		}
	}
	return false
}

func run() error {
	c, err := parseFlags()
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("must run as root: kpath-agent loads BPF programs and attaches uprobes (try: sudo make bench)")
	}
	for _, b := range []string{c.etcdBin, c.apiserverBin} {
		if _, err := os.Stat(b); err != nil && benchOp != "pods" && benchOp != "scale" {
			return fmt.Errorf("%v (build the lab binaries with test/lab/build.sh, or pass --etcd/--apiserver)", err)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tmp, err := os.MkdirTemp(c.workDir, "kpath-bench-")
	if err != nil {
		return err
	}
	if c.keep {
		defer fmt.Fprintln(os.Stderr, "bench: kept", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}

	env := &benchEnv{cfg: c, tmp: tmp}
	agentSrc := "given with --agent"
	if c.has(modeKpath) && c.agentBin == "" {
		if c.agentBin, agentSrc, err = buildAgent(ctx, tmp); err != nil {
			return err
		}
		env.cfg.agentBin = c.agentBin
	}
	if benchOp == "pods" || benchOp == "scale" {
		if env.sink, err = startSink(); err != nil {
			return err
		}
		defer env.sink.stop()
		if benchOp == "scale" {
			return runScale(ctx, env, agentSrc)
		}
		return runLifecycles(ctx, env, agentSrc)
	}
	if err := env.isolateBinaries(); err != nil {
		return err
	}
	if env.pki, err = writePKI(filepath.Join(tmp, "pki")); err != nil {
		return err
	}
	if env.sink, err = startSink(); err != nil {
		return err
	}
	defer env.sink.stop()

	if c.bpfStats && c.has(modeKpath) {
		closer, err := enableBPFStats()
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: BPF run-time statistics unavailable:", err)
			env.cfg.bpfStats = false
		} else {
			defer closer.Close()
		}
	}

	host := describeHost(env.cfg, agentSrc)
	host.print(os.Stdout)

	var results []roundResult
	start := time.Now()
	waitBudget := c.waitClean
	for r := 1; r <= c.rounds; r++ {
		for _, m := range c.modes {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("interrupted: %w", err)
			}
			waited, err := waitClean(ctx, waitBudget)
			if err != nil {
				return err
			}
			waitBudget -= waited
			fmt.Fprintf(os.Stderr, "bench: round %d/%d mode %-6s ... ", r, c.rounds, m)
			res, err := runRound(ctx, env, r, m)
			if err != nil {
				fmt.Fprintln(os.Stderr, "failed")
				return fmt.Errorf("round %d mode %s: %w", r, m, err)
			}
			note := ""
			if res.mode != modeKpath && (res.apiUprobes || res.etcdUprobes) {
				note = " — NOT CLEAN: uprobes fired in the bench's processes"
			}
			if len(res.foreignAgents) > 0 {
				note += " — other BPF tracers: " + procList(res.foreignAgents)
			}
			fmt.Fprintf(os.Stderr, opLabel("%.0f creates/s, apiserver %.3f ms CPU/create, p99 %.1f ms%s\n"),
				res.throughput(), res.apiCPUPerCreate(), ms(res.p99), note)
			results = append(results, res)
		}
	}
	host.finish(time.Since(start))
	report(os.Stdout, env.cfg, host, results)
	return nil
}

// waitClean waits up to max for the host to have no other BPF tracers and
// says how long it waited.
func waitClean(ctx context.Context, max time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		ts := bpfTracers(0)
		if len(ts) == 0 {
			return time.Since(start), nil
		}
		if time.Since(start) >= max {
			if max > 0 {
				fmt.Fprintf(os.Stderr, "bench: --wait-clean used up; going on with other BPF tracers running: %s\n", procList(ts))
			}
			return time.Since(start), nil
		}
		fmt.Fprintf(os.Stderr, "bench: waiting for other BPF tracers to finish: %s\n", procList(ts))
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(min(5*time.Second, max-time.Since(start))):
		}
	}
}
