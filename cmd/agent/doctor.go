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
	"unsafe"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

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
)

type check struct {
	name   string
	status checkStatus
	detail string
	fix    string // printed as "FIX: ..." when status is FAIL (or warn)
}

type doctor struct {
	out    io.Writer
	proc   string
	detail bool
	checks []check
	rows   []rowLine
}

type rowLine struct {
	comp, pid, row, stage, state, version, reason string
}

func (d *doctor) add(c check) { d.checks = append(d.checks, c) }

func runDoctor(args []string) error {
	fs := flag.NewFlagSet("kpath-agent doctor", flag.ContinueOnError)
	proc := fs.String("proc", "/proc", "the host's /proc (the agent needs hostPID)")
	detail := fs.Bool("detail", false, "also try the detail rows (as the agent's --detail)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: kpath-agent doctor [--proc DIR] [--detail]\n\nChecks the kernel, capabilities and BPF, finds the control-plane components\nand tries every catalogue row on them. Exits 1 if something required is missing.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	d := &doctor{out: os.Stdout, proc: *proc, detail: *detail}
	return d.run()
}

func (d *doctor) run() error {
	d.kernel()
	d.btf()
	d.uprobes()
	caps := d.capabilities()
	d.uprobePermission(caps)
	d.memlock(caps)
	tracer := d.bpfLoad(caps)
	d.components(tracer, caps)
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
	need(capPerfmon, "CAP_PERFMON", "attach uprobes with perf_event_open", capSysAdmin)
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

func (d *doctor) bpfLoad(caps capSet) *probes.Tracer {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	t, err := probes.NewTracer(probes.Options{Detail: d.detail, Logger: quiet})
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
		return nil
	}
	d.add(check{name: "BPF program load", status: statusOK, detail: "program and maps loaded and unloaded"})
	return t
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
		known := false
		for target := range probes.Targets {
			// comm is cut to 15 bytes: kube-controller-manager reads "kube-controller".
			if target == name || len(target) > 15 && target[:15] == name {
				known = true
			}
		}
		if !known {
			continue
		}
		if _, err := os.Readlink(filepath.Join(procRoot, e.Name(), "exe")); err != nil && errors.Is(err, os.ErrPermission) {
			out = append(out, name+" pid "+e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func (d *doctor) components(t *probes.Tracer, caps capSet) {
	hostNS := hostPIDNamespace(d.proc)
	found, err := probes.FindProcesses(d.proc)
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
	var names []string
	for _, f := range found {
		names = append(names, fmt.Sprintf("%s pid %d %s", f.Component, f.PID, binaryVersions(d.proc, f)))
	}
	d.add(check{name: "components", status: statusOK, detail: strings.Join(names, "; ")})

	if t == nil {
		d.add(check{name: "catalogue rows", status: statusSkip, detail: "the BPF program did not load"})
		return
	}
	var attached, total int
	var permErrs []string
	for _, f := range found {
		pid := strconv.Itoa(f.PID)
		p, err := t.Attach(f.PID, f.Component)
		if p == nil {
			reason := fmt.Sprint(err)
			d.rows = append(d.rows, rowLine{string(f.Component), pid, "-", "-", "not traced", "", reason})
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
			}
			d.rows = append(d.rows, rowLine{string(f.Component), pid, r.Row.ID, r.Row.Stage, string(r.State), r.Version, reason})
		}
		if len(p.Rows) == 0 {
			d.rows = append(d.rows, rowLine{string(f.Component), pid, "-", "-", "no rows", "", "the catalogue has no rows for this component"})
		}
		t.Detach(f.PID)
	}
	c := check{name: "catalogue rows", status: statusOK, detail: fmt.Sprintf("%d of %d rows attachable (table below)", attached, total)}
	switch {
	case len(permErrs) > 0:
		c.status = statusFail
		c.detail += "; permission denied: " + permErrs[0]
		switch {
		case !caps.has(capSysPtrace):
			c.fix = "CAP_SYS_PTRACE missing: add it to securityContext.capabilities.add (uprobes on another user's or more privileged process need it)"
		case !caps.has(capSysAdmin):
			c.fix = sysAdminFix
		default:
			c.fix = "attaching uprobes was refused: the container needs CAP_PERFMON, CAP_SYS_PTRACE and (on Linux ≥ 6.16) CAP_SYS_ADMIN, and a seccomp profile and LSM (AppArmor: Unconfined) that allow perf_event_open(2) on other processes"
		}
	case attached == 0:
		c.status = statusWarn
		c.detail += ": no row fits these binaries, nothing will be traced"
	}
	d.add(c)
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
		fmt.Fprintln(tw, "COMPONENT\tPID\tROW\tSTAGE\tSTATE\tVERSION\tWHY")
		for _, r := range d.rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.comp, r.pid, r.row, r.stage, r.state, r.version, oneLine(r.reason))
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

// sysAdminFix is the fix when the kernel refuses uprobe perf events to
// CAP_PERFMON: "perf/core: Require CAP_SYS_ADMIN for uprobes" (Linux 6.16,
// backported to stable kernels) made perf_uprobe_event_init check
// capable(CAP_SYS_ADMIN) instead of perfmon_capable().
const sysAdminFix = "CAP_SYS_ADMIN missing: this kernel creates uprobe perf events only for CAP_SYS_ADMIN (Linux 6.16+ and stable backports of \"perf/core: Require CAP_SYS_ADMIN for uprobes\"; CAP_PERFMON is no longer enough): add SYS_ADMIN to securityContext.capabilities.add"

// uprobePermission asks the kernel directly whether this process may create
// a uprobe perf event: one on its own executable (main.main, long passed),
// for itself, closed at once. It needs no BPF and no ptrace access, so it
// isolates the kernel's rule for uprobes from everything else.
func (d *doctor) uprobePermission(caps capSet) {
	name := "uprobe permission"
	typ, err := os.ReadFile(filepath.Join(uprobePMUPath, "type"))
	if err != nil {
		d.add(check{name: name, status: statusSkip, detail: "no uprobe PMU"})
		return
	}
	pmu, err := strconv.ParseUint(strings.TrimSpace(string(typ)), 10, 32)
	if err != nil {
		d.add(check{name: name, status: statusSkip, detail: "uprobe PMU type: " + err.Error()})
		return
	}
	self, err := os.Executable()
	if err != nil {
		d.add(check{name: name, status: statusSkip, detail: err.Error()})
		return
	}
	bin, err := probes.OpenBinary(self)
	if err != nil {
		d.add(check{name: name, status: statusSkip, detail: err.Error()})
		return
	}
	fn, err := bin.Func("main.main")
	bin.Close()
	if err != nil {
		d.add(check{name: name, status: statusSkip, detail: err.Error()})
		return
	}
	path, err := unix.BytePtrFromString(self)
	if err != nil {
		d.add(check{name: name, status: statusSkip, detail: err.Error()})
		return
	}
	attr := unix.PerfEventAttr{
		Type: uint32(pmu),
		Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{})),
		Ext1: uint64(uintptr(unsafe.Pointer(path))), // config1: uprobe_path
		Ext2: fn.FileOffset,                         // config2: probe_offset
		Bits: unix.PerfBitDisabled,
	}
	fd, err := unix.PerfEventOpen(&attr, os.Getpid(), -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	runtime.KeepAlive(path)
	if err == nil {
		unix.Close(fd)
		d.add(check{name: name, status: statusOK, detail: "the kernel lets this process create uprobe perf events"})
		return
	}
	c := check{name: name, status: statusFail, detail: "perf_event_open(uprobe on itself): " + err.Error()}
	switch {
	case !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM):
		c.status, c.fix = statusWarn, ""
	case !caps.has(capPerfmon) && !caps.has(capSysAdmin):
		c.detail += " (no CAP_PERFMON, see the capabilities FIX)"
	case errors.Is(err, unix.EPERM):
		c.fix = "perf_event_open(2) was refused with EPERM: a seccomp profile or LSM blocks it; use seccompProfile RuntimeDefault of a runtime that allows it with CAP_PERFMON/CAP_SYS_ADMIN, or a custom profile"
	case !caps.has(capSysAdmin):
		c.fix = sysAdminFix
	default:
		c.fix = "perf_event_open(2) of a uprobe was refused even with CAP_SYS_ADMIN: check kernel.perf_event_paranoid and the LSM (AppArmor/SELinux) policy of the container"
	}
	d.add(c)
}
