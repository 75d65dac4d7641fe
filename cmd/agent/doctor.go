package main

// kpath-agent doctor: checks that this node and this container can run the
// agent, and says how to fix what is missing. It runs where the agent runs
// (kubectl exec into the agent pod, or on the host as root):
//
//	kpath-agent doctor [--proc /proc] [--detail]
//
// It prints a table of checks, then one line per catalogue row of every
// component found: attached or not, and why. It really loads the BPF
// program and really attaches each component's rows (detaching them right
// after), so what it reports is what the agent gets. It exits non-zero when
// something required is missing, with a FIX line for each problem.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/kpath/kpath/bpf"
	"github.com/kpath/kpath/probes"
)

// Capability numbers (linux/capability.h).
const (
	capSysPtrace  = 19
	capSysAdmin   = 21
	capSysResrc   = 24
	capPerfmon    = 38
	capBPF        = 39
	minKernelMaj  = 5
	minKernelMin  = 15
	uprobePMUPath = "/sys/bus/event_source/devices/uprobe"
	btfPath       = "/sys/kernel/btf/vmlinux"
)

type checkStatus string

const (
	statusOK   checkStatus = "ok"
	statusWarn checkStatus = "warn"
	statusFail checkStatus = "FAIL"
	statusSkip checkStatus = "skipped"
	statusInfo checkStatus = "info" // reported, not required either way
)

type check struct {
	name   string
	status checkStatus
	detail string
	fix    string // printed as "FIX: ..." when status is FAIL (or warn)
}

type doctor struct {
	out     io.Writer
	proc    string
	detail  bool
	observe time.Duration
	checks  []check
	rows    []rowLine
}

type rowLine struct {
	comp, pid, row, stage, state, version, reason string
	reads                                         string // what its events read while observed
}

func (d *doctor) add(c check) { d.checks = append(d.checks, c) }

func runDoctor(args []string) error {
	fs := flag.NewFlagSet("kpath-agent doctor", flag.ContinueOnError)
	proc := fs.String("proc", "/proc", "the host's /proc (the agent needs hostPID)")
	detail := fs.Bool("detail", false, "also try the detail rows (as the agent's --detail)")
	observe := fs.Duration("observe", 3*time.Second, "after attaching, read the probes' events this long and report per row how many fired and which captures could not be read (0: skip)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kpath-agent doctor [--proc DIR] [--detail] [--observe 3s]\n\nChecks the kernel, capabilities and BPF, finds the control-plane components\nand tries every catalogue row on them. Exits 1 if something required is missing.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	d := &doctor{out: os.Stdout, proc: *proc, detail: *detail, observe: *observe}
	return d.run()
}

func (d *doctor) run() error {
	d.kernel()
	d.btf()
	d.uprobes()
	caps := d.capabilities()
	d.memlock(caps)
	tracer, multi := d.bpfLoad(caps)
	needSysAdmin := d.uprobePermission(caps, multi)
	d.components(tracer, caps, multi, needSysAdmin)
	if tracer != nil {
		tracer.Close()
	}
	return d.report()
}

func (d *doctor) kernel() {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		d.add(check{name: "kernel", status: statusFail, detail: err.Error()})
		return
	}
	rel := unix.ByteSliceToString(u.Release[:])
	maj, min, ok := kernelVersion(rel)
	c := check{name: "kernel", status: statusOK, detail: fmt.Sprintf("%s (need ≥ %d.%d)", rel, minKernelMaj, minKernelMin)}
	switch {
	case !ok:
		c.status, c.detail = statusWarn, fmt.Sprintf("%s: cannot read the version; kpath needs ≥ %d.%d", rel, minKernelMaj, minKernelMin)
	case maj < minKernelMaj || maj == minKernelMaj && min < minKernelMin:
		c.status = statusFail
		c.fix = fmt.Sprintf("kernel %s is too old: kpath needs Linux ≥ %d.%d (BPF ring buffer, CAP_BPF, BPF cookies on uprobes); run the agent on newer nodes", rel, minKernelMaj, minKernelMin)
	}
	d.add(c)
}

// kernelVersion reads "6.18.44-fc" as 6, 18.
func kernelVersion(rel string) (maj, min int, ok bool) {
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	end := 0
	for end < len(parts[1]) && parts[1][end] >= '0' && parts[1][end] <= '9' {
		end++
	}
	min, err2 := strconv.Atoi(parts[1][:end])
	return maj, min, err1 == nil && err2 == nil
}

func (d *doctor) btf() {
	// kpath's BPF program is compiled by bpf2go without CO-RE relocations
	// (it reads only user memory, at offsets the catalogue gives), so
	// loading it never consults the kernel's BTF. Report, don't require.
	if _, err := os.Stat(btfPath); err != nil {
		d.add(check{name: "kernel BTF", status: statusOK, detail: btfPath + " absent: fine, kpath's BPF program has no CO-RE relocations"})
		return
	}
	d.add(check{name: "kernel BTF", status: statusOK, detail: btfPath + " present (not required: no CO-RE relocations)"})
}

func (d *doctor) uprobes() {
	if _, err := os.Stat(uprobePMUPath); err != nil {
		d.add(check{name: "uprobes", status: statusFail, detail: err.Error(),
			fix: "the kernel has no uprobe PMU (" + uprobePMUPath + "): it needs CONFIG_UPROBE_EVENTS=y; if /sys is hidden in the container, do not mask it"})
		return
	}
	d.add(check{name: "uprobes", status: statusOK, detail: uprobePMUPath})
}

type capSet uint64

func (c capSet) has(bit uint) bool { return c&(1<<bit) != 0 }

// readCaps reads CapEff and the real UID from /proc/self/status.
func readCaps() (capSet, int, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, -1, err
	}
	var eff capSet
	uid, found := -1, false
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "CapEff":
			n, err := strconv.ParseUint(v, 16, 64)
			if err != nil {
				return 0, -1, fmt.Errorf("CapEff %q: %w", v, err)
			}
			eff, found = capSet(n), true
		case "Uid":
			if f := strings.Fields(v); len(f) > 0 {
				uid, _ = strconv.Atoi(f[0])
			}
		}
	}
	if !found {
		return 0, uid, errors.New("/proc/self/status has no CapEff line")
	}
	return eff, uid, nil
}

func (d *doctor) capabilities() capSet {
	eff, uid, err := readCaps()
	if err != nil {
		d.add(check{name: "capabilities", status: statusWarn, detail: err.Error()})
		return ^capSet(0)
	}
	var have, fixes []string
	need := func(bit uint, name, why string, alt ...uint) {
		ok := eff.has(bit)
		for _, a := range alt {
			ok = ok || eff.has(a)
		}
		if ok {
			have = append(have, name)
			return
		}
		fixes = append(fixes, fmt.Sprintf("%s missing (%s): add it to securityContext.capabilities.add", name, why))
	}
	// CAP_SYS_ADMIN implies BPF and PERFMON (and older kernels knew only it).
	need(capBPF, "CAP_BPF", "load the BPF program and its maps", capSysAdmin)
	need(capPerfmon, "CAP_PERFMON", "load the tracing (uprobe) BPF program and attach it", capSysAdmin)
	need(capSysPtrace, "CAP_SYS_PTRACE", "read /proc/PID/exe of the control-plane processes and attach to them")
	var names []string
	for _, c := range []struct {
		bit  uint
		name string
	}{{capBPF, "CAP_BPF"}, {capPerfmon, "CAP_PERFMON"}, {capSysPtrace, "CAP_SYS_PTRACE"}, {capSysAdmin, "CAP_SYS_ADMIN"}, {capSysResrc, "CAP_SYS_RESOURCE"}} {
		if eff.has(c.bit) {
			names = append(names, c.name)
		}
	}
	detail := fmt.Sprintf("CapEff %016x (%s); uid %d", uint64(eff), strings.Join(names, " "), uid)
	_ = have
	if len(fixes) == 0 {
		d.add(check{name: "capabilities", status: statusOK, detail: detail})
		return eff
	}
	for i, f := range fixes {
		c := check{name: "capabilities", status: statusFail, detail: detail, fix: f}
		if i > 0 {
			c.name, c.detail = "", ""
		}
		d.add(c)
	}
	return eff
}

func (d *doctor) memlock(caps capSet) {
	var lim unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim)
	if !caps.has(capBPF) && !caps.has(capSysAdmin) {
		// RemoveMemlock tells memcg accounting by creating a map, which
		// needs CAP_BPF: without it, it would wrongly blame the rlimit.
		d.add(check{name: "memlock rlimit", status: statusSkip, detail: fmt.Sprintf("RLIMIT_MEMLOCK %s; cannot tell whether it matters without CAP_BPF", rlim(lim.Cur))})
		return
	}
	// On kernels ≥ 5.11 BPF memory is charged to the memory cgroup and
	// RemoveMemlock does nothing; on older ones it raises the limit, which
	// needs CAP_SYS_RESOURCE when above the hard limit.
	if err := rlimit.RemoveMemlock(); err != nil {
		d.add(check{name: "memlock rlimit", status: statusFail, detail: fmt.Sprintf("RLIMIT_MEMLOCK %s: %v", rlim(lim.Cur), err),
			fix: "this kernel accounts BPF memory against RLIMIT_MEMLOCK and the agent cannot raise it: add SYS_RESOURCE to securityContext.capabilities.add (or raise the container runtime's memlock limit)"})
		return
	}
	var now unix.Rlimit
	_ = unix.Getrlimit(unix.RLIMIT_MEMLOCK, &now)
	detail := fmt.Sprintf("RLIMIT_MEMLOCK %s: not needed, the kernel charges BPF memory to the memory cgroup", rlim(now.Cur))
	if now.Cur != lim.Cur {
		detail = fmt.Sprintf("RLIMIT_MEMLOCK raised from %s to %s (this kernel accounts BPF memory against it)", rlim(lim.Cur), rlim(now.Cur))
	}
	d.add(check{name: "memlock rlimit", status: statusOK, detail: detail})
}

func rlim(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

// multiSupport says whether the agent attaches each row as one BPF
// uprobe_multi link (Linux ≥ 6.6: needs CAP_BPF, CAP_PERFMON and
// CAP_SYS_PTRACE, no perf events) or, on kernels without it, as one
// perf-event uprobe per site (which Linux ≥ 6.16 allows only with
// CAP_SYS_ADMIN).
type multiSupport int

const (
	multiUnknown multiSupport = iota // the BPF program did not load
	multiYes
	multiNo
)

// bpfLoad loads the BPF program as the agent does: once on its own, to learn
// whether the kernel took the uprobe_multi program (bpf.Objects.MultiErr),
// then through a Tracer for the catalogue rows.
func (d *doctor) bpfLoad(caps capSet) (*probes.Tracer, multiSupport) {
	var (
		t        *probes.Tracer
		multiErr error
	)
	objs, err := bpf.Load(0)
	if err == nil {
		multiErr = objs.MultiErr
		objs.Close()
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		t, err = probes.NewTracer(probes.Options{Detail: d.detail, Operators: true, Logger: quiet})
	}
	if err != nil {
		c := check{name: "BPF program load", status: statusFail, detail: err.Error()}
		switch {
		case !caps.has(capBPF) && !caps.has(capSysAdmin):
			c.detail = "refused: no CAP_BPF (see the capabilities FIX)"
		case errors.Is(err, os.ErrPermission):
			c.fix = "the kernel refused to load the BPF program: the container needs CAP_BPF and CAP_PERFMON (securityContext.capabilities.add), runAsUser 0, and a seccomp profile that allows bpf(2) and perf_event_open(2)"
		default:
			c.fix = "the BPF program did not load: see the error above (kernel ≥ 5.15 with BPF ring buffers and uprobe BPF cookies)"
		}
		d.add(c)
		d.add(check{name: "uprobe_multi", status: statusSkip, detail: "unknown: the BPF program did not load"})
		return nil, multiUnknown
	}
	d.add(check{name: "BPF program load", status: statusOK, detail: "program and maps loaded and unloaded"})
	if multiErr != nil {
		d.add(check{name: "uprobe_multi", status: statusWarn,
			detail: "not in this kernel (Linux < 6.6): rows attach as perf-event uprobes, one per site, slower to detach and maybe needing CAP_SYS_ADMIN (below): " + oneLine(multiErr.Error())})
		return t, multiNo
	}
	d.add(check{name: "uprobe_multi", status: statusOK, detail: "each row attaches as one BPF uprobe_multi link: needs CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE, no perf events"})
	return t, multiYes
}

// hostPIDNamespace says whether procRoot shows the host's processes: only
// the initial PID namespace sees kernel threads, and kthreadd is PID 2.
func hostPIDNamespace(procRoot string) bool {
	b, err := os.ReadFile(filepath.Join(procRoot, "2", "comm"))
	return err == nil && strings.TrimSpace(string(b)) == "kthreadd"
}

// unreadable lists processes whose comm names a component but whose exe
// link cannot be read: FindProcesses skips those silently.
func unreadable(procRoot string) []string {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "comm"))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		if _, known := probes.TargetOfComm(name); !known {
			continue
		}
		if _, err := os.Readlink(filepath.Join(procRoot, e.Name(), "exe")); err != nil && errors.Is(err, os.ErrPermission) {
			out = append(out, name+" pid "+e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func (d *doctor) components(t *probes.Tracer, caps capSet, multi multiSupport, needSysAdmin bool) {
	hostNS := hostPIDNamespace(d.proc)
	find := probes.FindProcesses
	if t != nil {
		find = func(proc string, _ ...string) ([]probes.Found, error) { return t.Find(proc) }
	}
	found, err := find(d.proc)
	if err != nil {
		d.add(check{name: "components", status: statusFail, detail: err.Error(), fix: "--proc must be the host's /proc, readable by the agent"})
		return
	}
	if bad := unreadable(d.proc); len(bad) > 0 {
		d.add(check{name: "process access", status: statusFail,
			detail: "cannot read /proc/PID/exe of " + strings.Join(bad, ", ") + ": permission denied",
			fix:    "CAP_SYS_PTRACE missing or denied (AppArmor/SELinux): add SYS_PTRACE to securityContext.capabilities.add; on AppArmor hosts also set securityContext.appArmorProfile.type: Unconfined"})
	}
	if len(found) == 0 {
		c := check{name: "components", status: statusWarn, detail: "no kube-apiserver, etcd, kube-scheduler, kube-controller-manager or kubelet process under " + d.proc}
		if !hostNS {
			c.status = statusFail
			c.detail += ", and it is not the host's PID namespace (no kernel threads visible)"
			c.fix = "the agent does not see the host's processes: set hostPID: true in the pod spec (and --proc to the host's /proc)"
		}
		d.add(c)
		return
	}
	sort.Slice(found, func(i, j int) bool {
		if found[i].Component != found[j].Component {
			return found[i].Component < found[j].Component
		}
		return found[i].PID < found[j].PID
	})
	var names, refused []string
	for _, f := range found {
		if f.Refused != "" {
			refused = append(refused, f.Refused)
			continue
		}
		names = append(names, fmt.Sprintf("%s pid %d %s", f.Component, f.PID, binaryVersions(d.proc, f)))
	}
	if len(names) > 0 {
		d.add(check{name: "components", status: statusOK, detail: strings.Join(names, "; ")})
	}
	if len(refused) > 0 {
		d.add(check{name: "component binaries", status: statusFail, detail: strings.Join(refused, "; "),
			fix: "a component must run as its own Go executable: exec it from a wrapper script instead of running it as the script's child"})
	}

	if t == nil {
		d.add(check{name: "catalogue rows", status: statusSkip, detail: "the BPF program did not load"})
		return
	}
	var attached, total int
	var permErrs, uncovered []string
	for _, f := range found {
		pid := strconv.Itoa(f.PID)
		if f.Refused != "" {
			d.rows = append(d.rows, rowLine{comp: string(f.Component), pid: pid, row: "-", stage: "-", state: "not traced", reason: f.Refused})
			continue
		}
		p, err := t.AttachIn(d.proc, f.PID, f.Component)
		if p == nil {
			reason := fmt.Sprint(err)
			d.rows = append(d.rows, rowLine{comp: string(f.Component), pid: pid, row: "-", stage: "-", state: "not traced", reason: reason})
			if errors.Is(err, os.ErrPermission) {
				permErrs = append(permErrs, reason)
			}
			continue
		}
		for _, r := range p.Rows {
			total++
			reason := ""
			if r.Err != nil {
				reason = r.Err.Error()
			}
			switch r.State {
			case probes.RowAttached:
				attached++
				reason = fmt.Sprintf("%d uprobes", r.Uprobes)
			case probes.RowDisabled:
				reason = "detail row: attached with --detail"
			case probes.RowFailed:
				if errors.Is(r.Err, os.ErrPermission) {
					permErrs = append(permErrs, r.Row.ID+": "+reason)
				}
			case probes.RowNotCovered:
				uncovered = append(uncovered, string(f.Component)+" "+r.Row.ID+" ("+r.Row.Module+" "+r.Version+")")
			}
			d.rows = append(d.rows, rowLine{comp: string(f.Component), pid: pid, row: r.Row.ID, stage: r.Row.Stage, state: string(r.State), version: r.Version, reason: reason})
		}
		if len(p.Rows) == 0 {
			d.rows = append(d.rows, rowLine{comp: string(f.Component), pid: pid, row: "-", stage: "-", state: "no rows", reason: "the catalogue has no rows for this component"})
		}
	}
	d.observeReads(t)
	for _, f := range found {
		t.Detach(f.PID)
	}
	c := check{name: "catalogue rows", status: statusOK, detail: fmt.Sprintf("%d of %d rows attachable (table below)", attached, total)}
	switch {
	case len(permErrs) > 0:
		c.status = statusFail
		c.detail += "; permission denied: " + permErrs[0]
		c.fix = rowsPermissionFix(caps, multi, needSysAdmin)
	case attached == 0:
		c.status = statusWarn
		c.detail += ": no row fits these binaries, nothing will be traced"
	case len(uncovered) > 0:
		c.status = statusWarn
		c.detail += "; not covered by this kpath at these versions: " + strings.Join(uncovered, ", ")
		c.fix = "their stages will be missing from traces: upgrade kpath (README, Versions), or run versions it covers"
	}
	d.add(c)
}

// observeReads reads the attached probes' events for d.observe and notes,
// per row, how many fired and which captures could not be read; a row
// whose reads keep failing is reported by name.
func (d *doctor) observeReads(t *probes.Tracer) {
	if d.observe <= 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.observe)
	defer cancel()
	if err := t.Read(ctx, func(probes.Event) {}); err != nil {
		d.add(check{name: "probe reads", status: statusWarn, detail: "reading the ring buffer: " + err.Error()})
		return
	}
	stats := map[[2]string]probes.ReadStats{}
	for _, rs := range t.ReadStats() {
		stats[[2]string{string(rs.Component), rs.Row}] = rs
	}
	var broken []string
	for i := range d.rows {
		r := &d.rows[i]
		if r.state != string(probes.RowAttached) {
			continue
		}
		rs, ok := stats[[2]string{r.comp, r.row}]
		if !ok {
			r.reads = fmt.Sprintf("0 events in %v", d.observe)
			continue
		}
		r.reads = fmt.Sprintf("%d events", rs.Events)
		if rs.Filtered > 0 {
			r.reads += fmt.Sprintf(", %d filtered", rs.Filtered)
		}
		for _, f := range probes.BrokenReads(rs) {
			r.reads += fmt.Sprintf(", %s unread in %d", f, rs.Unread[f])
			broken = append(broken, fmt.Sprintf("%s %s (%s unread in %d of %d events)", r.comp, r.row, f, rs.Unread[f], rs.Events))
		}
	}
	c := check{name: "probe reads", status: statusOK, detail: fmt.Sprintf("observed %v: every capture that fired was read", d.observe)}
	if len(broken) > 0 {
		c.status, c.detail = statusFail, "rows whose reads keep failing: "+strings.Join(broken, "; ")
		c.fix = "the binary's layout differs from what these rows read: this version needs rows of its own (docs/probe-points.md); report it with the versions above"
	}
	d.add(c)
}

// rowsPermissionFix is the fix when attaching rows was refused.
func rowsPermissionFix(caps capSet, multi multiSupport, needSysAdmin bool) string {
	switch {
	case !caps.has(capSysPtrace):
		return "CAP_SYS_PTRACE missing: add it to securityContext.capabilities.add (uprobes on another user's or more privileged process need it)"
	case multi == multiYes:
		return "attaching uprobe_multi links was refused although the container has CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE: an LSM or the seccomp profile denies it; on AppArmor hosts set securityContext.appArmorProfile.type: Unconfined, and the seccomp profile must allow bpf(2) (RuntimeDefault does)"
	case needSysAdmin && !caps.has(capSysAdmin):
		return sysAdminFix
	default:
		return "attaching uprobes was refused: without uprobe_multi the container needs CAP_PERFMON, CAP_SYS_PTRACE and, if the kernel demands it (the CAP_SYS_ADMIN check), CAP_SYS_ADMIN, and a seccomp profile and LSM (AppArmor: Unconfined) that allow perf_event_open(2) on other processes"
	}
}

// binaryVersions describes a component's binary: its Kubernetes or etcd
// version and Go version, as the catalogue sees them.
func binaryVersions(procRoot string, f probes.Found) string {
	b, err := probes.OpenBinary(filepath.Join(procRoot, strconv.Itoa(f.PID), "exe"))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer b.Close()
	var v string
	switch f.Component {
	case probes.Etcd:
		v, err = b.ModuleVersion("go.etcd.io/etcd/server/v3")
	default:
		v, err = b.KubernetesVersion()
	}
	if err != nil {
		v = "version unknown"
	}
	s := v + " " + b.GoVersion
	if b.Stripped {
		s += " stripped"
	}
	return s
}

func (d *doctor) report() error {
	var buf bytes.Buffer
	fmt.Fprintln(&buf, "kpath-agent doctor")
	fmt.Fprintln(&buf)
	tw := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	for _, c := range d.checks {
		if c.name == "" && c.detail == "" {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.name, c.status, c.detail)
	}
	tw.Flush()
	if len(d.rows) > 0 {
		fmt.Fprintln(&buf)
		tw = tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "COMPONENT\tPID\tROW\tSTAGE\tSTATE\tVERSION\tREADS\tWHY")
		for _, r := range d.rows {
			reads := r.reads
			if reads == "" {
				reads = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.comp, r.pid, r.row, r.stage, r.state, r.version, reads, oneLine(r.reason))
		}
		tw.Flush()
	}
	fmt.Fprintln(&buf)
	failed := 0
	printed := map[string]bool{}
	for _, c := range d.checks {
		if c.status == statusFail {
			failed++
			if c.fix != "" && !printed[c.fix] {
				printed[c.fix] = true
				fmt.Fprintln(&buf, "FIX: "+c.fix)
			}
		}
	}
	if failed == 0 {
		fmt.Fprintln(&buf, "doctor: every required check passed")
	}
	d.out.Write(buf.Bytes())
	if failed > 0 {
		return fmt.Errorf("doctor: %d required check(s) failed", failed)
	}
	return nil
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", "; ")
	if r := []rune(s); len(r) > 160 {
		s = string(r[:159]) + "…"
	}
	return s
}

// sysAdminFix is the fix when the agent needs uprobe perf events and the
// kernel refuses them to CAP_PERFMON: "perf/core: Require CAP_SYS_ADMIN for
// uprobes" (Linux 6.16, backported to stable kernels) made
// perf_uprobe_event_init check capable(CAP_SYS_ADMIN) instead of
// perfmon_capable(). With uprobe_multi (Linux ≥ 6.6) the agent creates no
// perf events, so it matters only on kernels that have the backport but not
// uprobe_multi.
const sysAdminFix = "CAP_SYS_ADMIN missing: this kernel has no BPF uprobe_multi (Linux < 6.6), so the agent attaches uprobes as perf events, and it creates uprobe perf events only for CAP_SYS_ADMIN (stable backports of Linux 6.16's \"perf/core: Require CAP_SYS_ADMIN for uprobes\"; CAP_PERFMON is no longer enough): add SYS_ADMIN to securityContext.capabilities.add"

// perfRule is what the kernel demands of a process that creates a uprobe
// perf event.
type perfRule int

const (
	ruleUnknown  perfRule = iota
	rulePerfmon           // CAP_PERFMON is enough (before Linux 6.16)
	ruleSysAdmin          // CAP_SYS_ADMIN only (Linux 6.16+ and backports)
)

// uprobePermission asks the kernel directly whether this process may create
// a uprobe perf event (selfUprobe), and says whether CAP_SYS_ADMIN is
// required: only when the kernel has no uprobe_multi (the agent then
// attaches perf-event uprobes) and creates uprobe perf events only for
// CAP_SYS_ADMIN. With uprobe_multi both checks are information. It returns
// whether CAP_SYS_ADMIN is required.
func (d *doctor) uprobePermission(caps capSet, multi multiSupport) bool {
	u, skip := newSelfUprobe()
	if skip != "" {
		d.add(check{name: "uprobe permission", status: statusSkip, detail: skip})
		d.add(sysAdminCheck(multi, caps.has(capSysAdmin), ruleUnknown, "cannot test the kernel's rule for uprobes: "+skip))
		return false
	}
	err, _ := u.open(false)
	d.add(permissionCheck(err, caps, multi))
	rule, why := ruleUnknown, ""
	if multi == multiNo {
		rule, why = u.rule(caps, err)
	}
	d.add(sysAdminCheck(multi, caps.has(capSysAdmin), rule, why))
	return multi == multiNo && rule == ruleSysAdmin
}

// permissionCheck judges the result of creating the self uprobe perf event:
// required only when the agent attaches perf-event uprobes.
func permissionCheck(err error, caps capSet, multi multiSupport) check {
	c := check{name: "uprobe permission", status: statusOK, detail: "the kernel lets this process create uprobe perf events"}
	if err == nil {
		if multi == multiYes {
			c.detail += " (not used: rows attach as uprobe_multi links)"
		}
		return c
	}
	c.status, c.detail = statusFail, "perf_event_open(uprobe on itself): "+err.Error()
	switch {
	case multi == multiYes:
		c.status = statusInfo
		c.detail += "; not needed: rows attach as uprobe_multi links, no perf events"
	case multi == multiUnknown:
		c.status = statusInfo
		c.detail += "; matters only if the kernel has no uprobe_multi, unknown until the BPF program loads (then run doctor again)"
	case !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM):
		c.status = statusWarn
	case !caps.has(capPerfmon) && !caps.has(capSysAdmin):
		c.detail += " (no CAP_PERFMON, see the capabilities FIX)"
	case errors.Is(err, unix.EPERM):
		c.fix = "perf_event_open(2) was refused with EPERM: a seccomp profile or LSM blocks it; use seccompProfile RuntimeDefault of a runtime that allows it with CAP_PERFMON/CAP_SYS_ADMIN, or a custom profile"
	case !caps.has(capSysAdmin):
		c.fix = sysAdminFix
	default:
		c.fix = "perf_event_open(2) of a uprobe was refused even with CAP_SYS_ADMIN: check kernel.perf_event_paranoid and the LSM (AppArmor/SELinux) policy of the container"
	}
	return c
}

// sysAdminCheck reports CAP_SYS_ADMIN: present or not, and required only
// when the kernel has no uprobe_multi and demands CAP_SYS_ADMIN for uprobe
// perf events (rule; why says how that was found).
func sysAdminCheck(multi multiSupport, present bool, rule perfRule, why string) check {
	c := check{name: "CAP_SYS_ADMIN", status: statusInfo}
	has, drop := "absent", ""
	if present {
		has, drop = "present", "; SYS_ADMIN can be dropped from securityContext.capabilities.add"
	}
	switch {
	case multi == multiYes:
		c.detail = has + ", not required: rows attach as uprobe_multi links, which need CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE" + drop
	case multi == multiUnknown:
		c.detail = has + "; required only if the kernel has no uprobe_multi and creates uprobe perf events only for CAP_SYS_ADMIN: unknown until the BPF program loads"
	case rule == ruleSysAdmin && present:
		c.status, c.detail = statusOK, "present, required: no uprobe_multi, and "+why
	case rule == ruleSysAdmin:
		c.status, c.detail, c.fix = statusFail, "absent, required: no uprobe_multi, and "+why, sysAdminFix
	case rule == rulePerfmon:
		c.detail = has + ", not required: no uprobe_multi, but " + why + drop
	default:
		c.status, c.detail = statusWarn, has+"; no uprobe_multi, so required if the kernel creates uprobe perf events only for CAP_SYS_ADMIN (Linux 6.16+ and backports): "+why
	}
	return c
}

// selfUprobe is a uprobe perf event on this process's own executable
// (main.main, long passed), for the calling thread. Creating it needs no BPF
// and no ptrace access, so it isolates the kernel's rule for uprobes from
// everything else.
type selfUprobe struct {
	attr unix.PerfEventAttr
	path *byte // config1 points here
}

// newSelfUprobe prepares the event; skip says why it cannot be.
func newSelfUprobe() (u *selfUprobe, skip string) {
	typ, err := os.ReadFile(filepath.Join(uprobePMUPath, "type"))
	if err != nil {
		return nil, "no uprobe PMU"
	}
	pmu, err := strconv.ParseUint(strings.TrimSpace(string(typ)), 10, 32)
	if err != nil {
		return nil, "uprobe PMU type: " + err.Error()
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err.Error()
	}
	bin, err := probes.OpenBinary(self)
	if err != nil {
		return nil, err.Error()
	}
	fn, err := bin.Func("main.main")
	bin.Close()
	if err != nil {
		return nil, err.Error()
	}
	path, err := unix.BytePtrFromString(self)
	if err != nil {
		return nil, err.Error()
	}
	u = &selfUprobe{path: path}
	u.attr = unix.PerfEventAttr{
		Type: uint32(pmu),
		Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Ext1: uint64(uintptr(unsafe.Pointer(path))), // config1: uprobe_path
		Ext2: fn.FileOffset,                         // config2: probe_offset
		Bits: unix.PerfBitDisabled,
	}
	return u, ""
}

// open creates the event and closes it at once. withoutSysAdmin does so on
// a thread locked to a goroutine of its own that first drops CAP_SYS_ADMIN
// from the thread's effective set (capabilities are per thread, and Go
// starts no thread from a locked one) and raises it again afterwards; if
// that fails, the thread stays locked and the runtime retires it with the
// goroutine. setupErr says why the drop failed.
func (u *selfUprobe) open(withoutSysAdmin bool) (perfErr, setupErr error) {
	if !withoutSysAdmin {
		return u.create(), nil
	}
	type result struct{ perf, setup error }
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		eff, err := dropEffective(capSysAdmin)
		if err != nil {
			done <- result{setup: fmt.Errorf("drop CAP_SYS_ADMIN on a test thread: %w", err)}
			return
		}
		err = u.create()
		if restoreEffective(eff) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{perf: err}
	}()
	r := <-done
	return r.perf, r.setup
}

// create creates the event for the calling thread and closes it.
func (u *selfUprobe) create() error {
	fd, err := unix.PerfEventOpen(&u.attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	runtime.KeepAlive(u.path)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// rule finds what the kernel demands for a uprobe perf event, given err, the
// outcome of open(false): without CAP_SYS_ADMIN that outcome tells; with it,
// the event is tried again on a thread without CAP_SYS_ADMIN.
func (u *selfUprobe) rule(caps capSet, err error) (perfRule, string) {
	if caps.has(capSysAdmin) {
		var setupErr error
		if err, setupErr = u.open(true); setupErr != nil {
			return ruleUnknown, "cannot tell whether the kernel does: " + setupErr.Error()
		}
	}
	return perfRuleOf(err, caps)
}

// perfRuleOf reads the kernel's rule from the outcome of creating a uprobe
// perf event without CAP_SYS_ADMIN.
func perfRuleOf(err error, caps capSet) (perfRule, string) {
	switch {
	case err == nil:
		return rulePerfmon, "this kernel creates uprobe perf events for CAP_PERFMON"
	case !caps.has(capPerfmon):
		return ruleUnknown, "cannot tell whether the kernel does without CAP_PERFMON (see the capabilities FIX)"
	case errors.Is(err, unix.EACCES):
		return ruleSysAdmin, "this kernel creates uprobe perf events only for CAP_SYS_ADMIN (perf_event_open with CAP_PERFMON: " + err.Error() + ")"
	default:
		return ruleUnknown, "cannot tell whether the kernel does: perf_event_open with CAP_PERFMON: " + err.Error() + " (see the uprobe permission check)"
	}
}

// dropEffective clears one capability from the calling thread's effective
// set (it stays permitted) and returns the effective set it had.
func dropEffective(bit uint) (saved [2]uint32, err error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return saved, fmt.Errorf("capget: %w", err)
	}
	saved = [2]uint32{data[0].Effective, data[1].Effective}
	data[bit/32].Effective &^= 1 << (bit % 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return saved, fmt.Errorf("capset: %w", err)
	}
	return saved, nil
}

// restoreEffective gives the calling thread back the effective set eff.
func restoreEffective(eff [2]uint32) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Effective, data[1].Effective = eff[0], eff[1]
	return unix.Capset(&hdr, &data[0])
}
