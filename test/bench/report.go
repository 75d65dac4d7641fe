package main

import (
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// hostInfo describes the machine and binaries, printed before the results.
type hostInfo struct {
	started, finished  time.Time
	elapsed            time.Duration
	nproc              int
	kernel             string
	loadStart, loadEnd string
	binaries           []string // one line per binary
	others             []hostProc
	foreign            []hostProc
	isolate            bool
}

func describeHost(c config, agentSrc string) *hostInfo {
	h := &hostInfo{started: time.Now(), nproc: runtime.NumCPU(), loadStart: loadavg(), isolate: c.isolate}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		h.kernel = strings.TrimSpace(string(b))
	}
	h.binaries = append(h.binaries, describeBinary("etcd", c.etcdBin, "--version"), describeBinary("kube-apiserver", c.apiserverBin, "--version"))
	if c.has(modeKpath) {
		h.binaries = append(h.binaries, describeBinary("kpath-agent", c.agentBin, "")+"; built from the "+agentSrc)
	}
	h.others = findProcs([]string{"kube-apiserver", "etcd"})
	h.foreign = bpfTracers(0)
	return h
}

func (h *hostInfo) finish(d time.Duration) {
	h.finished, h.elapsed, h.loadEnd = time.Now(), d, loadavg()
}

// describeBinary is "name: path — version, go, flavour".
func describeBinary(name, path, versionFlag string) string {
	var parts []string
	if versionFlag != "" {
		out, _ := exec.Command(path, versionFlag).CombinedOutput()
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		parts = append(parts, strings.Join(lines[:min(2, len(lines))], "; "))
	}
	if bi, err := buildinfo.ReadFile(path); err == nil {
		parts = append(parts, bi.GoVersion)
		for _, s := range bi.Settings {
			if s.Key == "-trimpath" && s.Value == "true" {
				parts = append(parts, "-trimpath")
			}
		}
	}
	if f, err := elf.Open(path); err == nil {
		if f.Section(".symtab") == nil {
			parts = append(parts, "stripped")
		} else {
			parts = append(parts, "not stripped")
		}
		f.Close()
	}
	return fmt.Sprintf("%s: `%s` (%s)", name, path, strings.Join(parts, ", "))
}

func (h *hostInfo) print(w io.Writer) {
	fmt.Fprintf(w, "# kpath overhead benchmark\n\n")
	fmt.Fprintf(w, "- started %s; nproc %d; kernel %s; load average %s\n", h.started.Format(time.RFC3339), h.nproc, h.kernel, h.loadStart)
	for _, b := range h.binaries {
		fmt.Fprintf(w, "- %s\n", b)
	}
	if h.isolate {
		fmt.Fprintf(w, "- etcd and kube-apiserver ran as renamed copies (%s, %s): other kpath-agents do not find them, and the bench's agent was shown only them (--proc); other kube-apiserver/etcd processes on the host: %s\n", isolatedEtcd, isolatedAPIServer, procList(h.others))
	} else {
		fmt.Fprintf(w, "- other kube-apiserver/etcd processes on the host (the bench's kpath-agent attaches to them too): %s\n", procList(h.others))
	}
	fmt.Fprintf(w, "- other BPF tracers on the host (kpath-agent, or any process holding BPF links): %s\n\n", procList(h.foreign))
}

// stat is the median and range of one quantity over rounds.
type stat struct{ med, lo, hi float64 }

func summarize(v []float64) stat {
	if len(v) == 0 {
		return stat{math.NaN(), math.NaN(), math.NaN()} // printed as NaN: no clean round
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return stat{med, s[0], s[n-1]}
}

func (s stat) fmt(prec int) string {
	return fmt.Sprintf("%.*f [%.*f–%.*f]", prec, s.med, prec, s.lo, prec, s.hi)
}

// spread is (max-min)/median in percent.
func (s stat) spread() float64 {
	if s.med == 0 {
		return 0
	}
	return 100 * (s.hi - s.lo) / s.med
}

// opLabel names the measured operation where a label says "create".
func opLabel(s string) string { return strings.ReplaceAll(s, "create", benchOp) }

type column struct {
	name string
	prec int
	f    func(roundResult) float64
}

var columns = []column{
	{"creates/s", 0, roundResult.throughput},
	{"mean ms", 2, func(r roundResult) float64 { return ms(r.mean) }},
	{"p50 ms", 2, func(r roundResult) float64 { return ms(r.p50) }},
	{"p99 ms", 2, func(r roundResult) float64 { return ms(r.p99) }},
	{"apiserver CPU ms/create", 3, roundResult.apiCPUPerCreate},
	{"apiserver sys ms/create", 3, func(r roundResult) float64 { return r.perCreate(r.api.sys) }},
	{"etcd CPU ms/create", 3, func(r roundResult) float64 { return r.perCreate(r.etcd.total()) }},
	{"agent CPU ms/create", 3, func(r roundResult) float64 { return r.perCreate(r.agent.total()) }},
	{"control-plane CPU ms/create", 3, roundResult.cpCPUPerCreate},
	{"bench CPU ms/create", 3, func(r roundResult) float64 { return r.perCreate(r.self.total()) }},
}

// measured is one mode's run in one round, of either benchmark.
type measured interface{ roundMode() (int, string) }

func (r roundResult) roundMode() (int, string) { return r.round, r.mode }
func (r lifeRound) roundMode() (int, string)   { return r.round, r.mode }

func byMode[R measured](rs []R, mode string) []R {
	var out []R
	for _, r := range rs {
		if _, m := r.roundMode(); m == mode {
			out = append(out, r)
		}
	}
	return out
}

func values[R any](rs []R, f func(R) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// paired is f(mode)/f(none) within each round that ran both.
func paired[R measured](rs []R, mode string, f func(R) float64) []float64 {
	var out []float64
	for _, a := range byMode(rs, mode) {
		ra, _ := a.roundMode()
		for _, b := range byMode(rs, modeNone) {
			if rb, _ := b.roundMode(); ra == rb && f(b) != 0 {
				out = append(out, f(a)/f(b))
			}
		}
	}
	return out
}

func report(w io.Writer, c config, h *hostInfo, rs []roundResult) {
	fmt.Fprintf(w, "- finished %s after %s; load average %s\n", h.finished.Format(time.RFC3339), h.elapsed.Round(time.Second), h.loadEnd)
	kexp := c.kpathExport
	if kexp == "otlp" {
		kexp = "otlp to the in-process sink"
	} else {
		kexp = "jsonl to /dev/null"
	}
	fmt.Fprintf(w, "- %d rounds of %s, %s warm-up + %s measured each, %d workers; kpath-agent --export=%s %s\n\n",
		c.rounds, strings.Join(c.modes, ", "), c.warmup, c.duration, c.workers, kexp, strings.Join(c.agentFlags, " "))

	fmt.Fprint(w, opLabel("## Per round\n\n| round | mode | creates | creates/s | mean ms | p50 ms | p99 ms | apiserver CPU ms/create (sys) | etcd CPU ms/create | agent CPU ms/create | bench CPU ms/create | other load (cores) | steal % | failures | notes |\n"))
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		var notes []string
		if why := dirty(r); why != "" {
			if c.includeDirty {
				notes = append(notes, "**dirty (kept by --include-dirty)**: "+why)
			} else {
				notes = append(notes, "**excluded**: "+why)
			}
		}
		if r.mode == modeKpath && r.apiUprobes {
			// Every default probe sits on an emulated site: a single-step
			// means a row landed elsewhere (a RET, a first instruction).
			notes = append(notes, "single-stepped probe hits in the apiserver ([uprobes] mapping)")
		}
		if len(r.others) > 0 && r.mode == modeKpath {
			notes = append(notes, "agent also attached to "+procList(r.others))
		}
		if len(r.foreignAgents) > 0 {
			notes = append(notes, "other BPF tracers: "+procList(r.foreignAgents))
		}
		if r.fail > 0 {
			notes = append(notes, fmt.Sprintf("first failure: %v", r.err))
		}
		fmt.Fprintf(w, "| %d | %s | %d | %.0f | %.2f | %.2f | %.2f | %.3f (%.3f) | %.3f | %.3f | %.3f | %.2f | %.1f | %d | %s |\n",
			r.round, r.mode, r.ok, r.throughput(), ms(r.mean), ms(r.p50), ms(r.p99), r.apiCPUPerCreate(), r.perCreate(r.api.sys),
			r.perCreate(r.etcd.total()), r.perCreate(r.agent.total()), r.perCreate(r.self.total()), r.otherCores(),
			100*float64(r.hostSteal)/float64(r.window)/float64(h.nproc), r.fail, strings.Join(notes, "; "))
	}

	var used []roundResult
	for _, r := range rs {
		if c.includeDirty || dirty(r) == "" {
			used = append(used, r)
		}
	}
	if len(used) < len(rs) {
		fmt.Fprintf(w, "\n%d of %d rounds are excluded from everything below: another BPF tracer (kpath-agent or kpath test of someone else) put uprobes in the bench's processes.\n", len(rs)-len(used), len(rs))
	}
	rs = used

	fmt.Fprintf(w, "\n## Per mode: median [min–max] over clean rounds\n\n| mode | rounds |")
	for _, col := range columns {
		fmt.Fprintf(w, " %s |", opLabel(col.name))
	}
	fmt.Fprintf(w, "\n|---|---|%s\n", strings.Repeat("---|", len(columns)))
	for _, m := range c.modes {
		fmt.Fprintf(w, "| %s | %d |", m, len(byMode(rs, m)))
		for _, col := range columns {
			fmt.Fprintf(w, " %s |", summarize(values(byMode(rs, m), col.f)).fmt(col.prec))
		}
		fmt.Fprintln(w)
	}

	if !c.has(modeNone) {
		return
	}
	type ratioRow struct {
		name string
		f    func(roundResult) float64
	}
	rows := []ratioRow{
		{opLabel("throughput (creates/s)"), roundResult.throughput},
		{"mean latency", func(r roundResult) float64 { return ms(r.mean) }},
		{"p50 latency", func(r roundResult) float64 { return ms(r.p50) }},
		{"p99 latency", func(r roundResult) float64 { return ms(r.p99) }},
		{opLabel("apiserver CPU per create"), roundResult.apiCPUPerCreate},
		{opLabel("etcd CPU per create"), func(r roundResult) float64 { return r.perCreate(r.etcd.total()) }},
		{opLabel("control-plane CPU per create (apiserver+etcd+agent)"), roundResult.cpCPUPerCreate},
	}
	others := []string{}
	for _, m := range []string{modeKpath, modeNative} {
		if c.has(m) {
			others = append(others, m)
		}
	}
	fmt.Fprintf(w, "\n## Ratios to none\n\nmedian(mode)/median(none); in brackets the min–max of the same ratio taken within each round.\n\n| quantity |")
	for _, m := range others {
		fmt.Fprintf(w, " %s/none |", m)
	}
	fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("---|", len(others)))
	ratio := func(m string, f func(roundResult) float64) float64 {
		base := summarize(values(byMode(rs, modeNone), f)).med
		if base == 0 {
			return math.NaN()
		}
		return summarize(values(byMode(rs, m), f)).med / base
	}
	for _, row := range rows {
		fmt.Fprintf(w, "| %s |", row.name)
		for _, m := range others {
			p := summarize(paired(rs, m, row.f))
			fmt.Fprintf(w, " %.3f [%.3f–%.3f] |", ratio(m, row.f), p.lo, p.hi)
		}
		fmt.Fprintln(w)
	}

	if c.has(modeKpath) && c.has(modeNative) {
		fmt.Fprintf(w, "\n## kpath's cost as a fraction of native tracing's cost\n\n| measure | kpath cost | native cost | kpath/native |\n|---|---|---|---|\n")
		thK, thN := 1-ratio(modeKpath, roundResult.throughput), 1-ratio(modeNative, roundResult.throughput)
		fmt.Fprintf(w, "| throughput lost (1 − ratio) | %.1f %% | %.1f %% | %.2f |\n", 100*thK, 100*thN, thK/thN)
		for _, row := range []ratioRow{rows[4], rows[6]} {
			none := summarize(values(byMode(rs, modeNone), row.f)).med
			dK := summarize(values(byMode(rs, modeKpath), row.f)).med - none
			dN := summarize(values(byMode(rs, modeNative), row.f)).med - none
			fmt.Fprintf(w, "| %s added | %+.3f ms (%+.1f %%) | %+.3f ms (%+.1f %%) | %.2f |\n", row.name, dK, 100*dK/none, dN, 100*dN/none, dK/dN)
		}
		// The same within each round, to show how much the fraction moves.
		var fr []float64
		for _, k := range byMode(rs, modeKpath) {
			for _, n := range byMode(rs, modeNone) {
				for _, v := range byMode(rs, modeNative) {
					if k.round == n.round && n.round == v.round {
						lk, ln := 1-k.throughput()/n.throughput(), 1-v.throughput()/n.throughput()
						if ln != 0 {
							fr = append(fr, lk/ln)
						}
					}
				}
			}
		}
		if len(fr) > 0 {
			s := summarize(fr)
			fmt.Fprintf(w, "\nThroughput-cost fraction within each round: %s (median [min–max]).\n", s.fmt(2))
		}
	}

	if k := byMode(rs, modeKpath); len(k) > 0 {
		fmt.Fprint(w, opLabel("\n## kpath-agent per create (median [min–max] over rounds)\n\n"))
		// Agent counters are divided by the creates between the two scrapes,
		// the sink's by the creates in the window.
		per := func(f func(roundResult) float64) string {
			return summarize(values(k, func(r roundResult) float64 { return f(r) / float64(max(r.hitCreates, 1)) })).fmt(2)
		}
		perSink := func(f func(roundResult) float64) string {
			return summarize(values(k, func(r roundResult) float64 { return f(r) / float64(r.ok) })).fmt(2)
		}
		fmt.Fprintf(w, opLabel("- probe hits per create: kube-apiserver %s, etcd %s\n"),
			per(func(r roundResult) float64 { return r.hits["kube-apiserver"] }), per(func(r roundResult) float64 { return r.hits["etcd"] }))
		probes := map[string]bool{}
		for _, r := range k {
			for p, v := range r.probeHits {
				if v > 0 {
					probes[p] = true
				}
			}
		}
		names := make([]string, 0, len(probes))
		for p := range probes {
			names = append(names, p)
		}
		slices.Sort(names)
		for _, p := range names {
			fmt.Fprintf(w, "  - %s: %s\n", p, per(func(r roundResult) float64 { return r.probeHits[p] }))
		}
		hpw := func(comp string) string {
			return summarize(values(k, func(r roundResult) float64 {
				if r.traces == 0 {
					return 0
				}
				return r.hits[comp] / r.traces
			})).fmt(2)
		}
		rowSets := map[string]bool{}
		for _, r := range k {
			rowSets["kube-apiserver: "+r.apiRows+"; etcd: "+r.etcdRows] = true
		}
		for rows := range rowSets {
			fmt.Fprintf(w, "- rows attached to the bench's processes: %s\n", rows)
		}
		if c.isolate {
			fmt.Fprintf(w, "- probe hits per traced write (every write of the bench's apiserver, its own leases included): kube-apiserver %s, etcd %s\n",
				hpw("kube-apiserver"), hpw("etcd"))
		} else {
			fmt.Fprintf(w, "- probe hits per traced write (all writes the agent traced on the host, so other apiservers' writes are in both numerator and denominator): kube-apiserver %s, etcd %s\n",
				hpw("kube-apiserver"), hpw("etcd"))
		}
		if n := byMode(rs, modeNone); len(n) > 0 {
			// Hits per create when the agent saw only the bench's processes,
			// else per traced write (other apiservers' writes in both).
			hitsPW := func(comp string) float64 {
				return summarize(values(k, func(r roundResult) float64 {
					if c.isolate {
						return r.hits[comp] / float64(max(r.hitCreates, 1))
					}
					if r.traces == 0 {
						return 0
					}
					return r.hits[comp] / r.traces
				})).med
			}
			delta := func(f func(roundResult) float64) float64 {
				return summarize(values(k, f)).med - summarize(values(n, f)).med
			}
			apiSys := func(r roundResult) float64 { return r.perCreate(r.api.sys) }
			etcdCPU := func(r roundResult) float64 { return r.perCreate(r.etcd.total()) }
			etcdSys := func(r roundResult) float64 { return r.perCreate(r.etcd.sys) }
			ha, he := hitsPW("kube-apiserver"), hitsPW("etcd")
			if ha > 0 && he > 0 {
				fmt.Fprintf(w, opLabel("- CPU added per probe hit (median CPU/create kpath − none, over probe hits per create): kube-apiserver %.0f µs (system time %.0f µs), etcd %.0f µs (system time %.0f µs)\n"),
					1000*delta(roundResult.apiCPUPerCreate)/ha, 1000*delta(apiSys)/ha, 1000*delta(etcdCPU)/he, 1000*delta(etcdSys)/he)
			}
		}
		if c.bpfStats {
			fmt.Fprintf(w, opLabel("- BPF program (kernel run-time statistics): %s µs per run, %s runs per create\n"),
				summarize(values(k, func(r roundResult) float64 {
					if r.bpfRuns == 0 {
						return math.NaN()
					}
					return float64(r.bpfRuntime) / float64(time.Microsecond) / float64(r.bpfRuns)
				})).fmt(2),
				summarize(values(k, func(r roundResult) float64 { return float64(r.bpfRuns) / float64(r.ok) })).fmt(2))
		}
		fmt.Fprintf(w, opLabel("- traces per create %s (incomplete %s); events dropped per create %s; export-dropped spans per create %s\n"),
			per(func(r roundResult) float64 { return r.traces }), per(func(r roundResult) float64 { return r.incomplete }),
			per(func(r roundResult) float64 { return r.dropped }), per(func(r roundResult) float64 { return r.exportDropped }))
		if c.kpathExport == "otlp" {
			fmt.Fprintf(w, opLabel("- spans received by the sink per create: %s; bench ConfigMaps with a kpath request span per create: %s\n"),
				perSink(func(r roundResult) float64 { return float64(r.sinkSpans) }), perSink(func(r roundResult) float64 { return float64(r.sinkBench) }))
		}
	}
	if v := byMode(rs, modeNative); len(v) > 0 {
		s := summarize(values(v, func(r roundResult) float64 { return float64(r.sinkSpans) / float64(r.ok) }))
		fmt.Fprintf(w, opLabel("\n## native tracing\n\n- spans received by the sink per create: %s\n"), s.fmt(2))
	}
}

// dirty says why a round is not a clean measurement, or "".
func dirty(r roundResult) string {
	if r.mode != modeKpath && (r.apiUprobes || r.etcdUprobes) {
		return fmt.Sprintf("uprobes fired in its processes (apiserver %v, etcd %v) though kpath was off", r.apiUprobes, r.etcdUprobes)
	}
	if r.mode == modeKpath && !r.isolated {
		for _, p := range r.foreignAgents {
			if p.comm == "kpath-agent" {
				return "another kpath-agent was running and may have probed the bench's processes too"
			}
		}
	}
	return ""
}
