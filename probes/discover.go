package probes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Targets maps an executable's base name to the component it runs. Release
// binaries and the lab use these names; a renamed binary is not found.
var Targets = map[string]Component{
	"kube-apiserver":          KubeAPIServer,
	"etcd":                    Etcd,
	"kube-scheduler":          KubeScheduler,
	"kube-controller-manager": KubeControllerManager,
	"kubelet":                 Kubelet,
}

// Found is a process that runs a known component.
type Found struct {
	PID       int
	Component Component
	Exe       string
	StartTime uint64
	// Refused says why a process that calls itself a component is not
	// traced: its command name is the component's but its executable is
	// not (a wrapper script, whose exe is the shell). Empty for the rest.
	Refused string
}

// TargetOfComm is the component a process's command name (/proc/PID/comm)
// names; the kernel cuts comm to 15 bytes (kube-controller-manager reads
// "kube-controller").
func TargetOfComm(comm string) (Component, bool) {
	for name, c := range Targets {
		if name == comm || len(name) > 15 && name[:15] == comm {
			return c, true
		}
	}
	return "", false
}

// impostor is the Found for a process whose comm names a component that
// its executable does not run: a script (comm is the script's name, exe
// the interpreter's) or a renamed program. It is listed, not skipped, so
// that the agent says why a "kube-apiserver" it can see is not traced.
func impostor(procRoot string, pid int, exe string) (Found, bool) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	comm, err := os.ReadFile(filepath.Join(dir, "comm"))
	if err != nil {
		return Found{}, false
	}
	name := strings.TrimSpace(string(comm))
	comp, ok := TargetOfComm(name)
	if !ok {
		return Found{}, false
	}
	st, err := startTimeIn(procRoot, pid)
	if err != nil {
		return Found{}, false
	}
	runs := exe
	if cmd, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		if args := strings.Split(strings.TrimRight(string(cmd), "\x00"), "\x00"); len(args) > 1 && strings.HasSuffix(args[1], name) {
			runs = exe + " " + args[1] // the interpreter and the script it runs
		}
	}
	return Found{PID: pid, Component: comp, Exe: exe, StartTime: st,
		Refused: fmt.Sprintf("pid %d is named %s but runs %s, not a %s binary (a wrapper script?): not traced; "+
			"have the script exec the real %s so that the process runs it", pid, name, runs, comp, comp)}, true
}

// FindProcesses lists the processes under procRoot (normally /proc, the
// host's when the agent runs with hostPID) that run a known component, or
// one of programs: executables (base names) of operators and controllers
// built with client-go, each its own component named after it.
func FindProcesses(procRoot string, programs ...string) ([]Found, error) {
	return FindProcessesWith(procRoot, nil, programs...)
}

// FindProcessesWith also lists the controller-runtime programs (operators)
// when ops is not nil: each its own component named after its executable.
func FindProcessesWith(procRoot string, ops *Operators, programs ...string) ([]Found, error) {
	return findProcesses(procRoot, ops, nil, programs...)
}

// notOurs remembers, from one scan to the next, the processes that run
// nothing kpath traces, by the executable /proc/PID/exe named: such a
// process is looked at again only when it execs (its exe changes) or its pid
// comes back after a scan that did not list it. A scan of a node's hundreds
// of processes is otherwise three path lookups each (exe, its stat, comm),
// every second: most of an idle agent's CPU.
type notOurs struct {
	mu   sync.Mutex
	exes map[int]string
}

func (n *notOurs) has(pid int, exe string) bool {
	if n == nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.exes[pid]
	return ok && e == exe
}

// keep replaces what is remembered by this scan's verdicts.
func (n *notOurs) keep(m map[int]string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	n.exes = m
	n.mu.Unlock()
}

func findProcesses(procRoot string, ops *Operators, skip *notOurs, programs ...string) ([]Found, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes in %s: %w", procRoot, err)
	}
	self := os.Getpid()
	var out []Found
	ignored := map[int]string{}
	defer skip.keep(ignored)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		raw, err := os.Readlink(filepath.Join(procRoot, e.Name(), "exe"))
		if err != nil {
			continue // kernel thread, or gone, or not ours to read
		}
		if skip.has(pid, raw) {
			ignored[pid] = raw
			continue
		}
		exe := strings.TrimSuffix(raw, " (deleted)")
		comp, ok := Targets[filepath.Base(exe)]
		if !ok && ops != nil {
			comp, ok = ops.Is(filepath.Join(procRoot, e.Name(), "exe"), exe)
		}
		if !ok && slices.Contains(programs, filepath.Base(exe)) {
			comp, ok = Component(filepath.Base(exe)), true
		}
		if !ok {
			if f, bad := impostor(procRoot, pid, exe); bad {
				out = append(out, f)
			} else {
				ignored[pid] = raw
			}
			continue
		}
		st, err := startTimeIn(procRoot, pid)
		if err != nil {
			continue
		}
		out = append(out, Found{PID: pid, Component: comp, Exe: exe, StartTime: st})
	}
	return out, nil
}

// Find lists the processes the tracer follows: the known components, the
// client-go programs it was told of and, with Options.Operators, every
// program that links controller-runtime.
func (t *Tracer) Find(procRoot string) ([]Found, error) {
	found, err := findProcesses(procRoot, t.ops, &t.notOurs, t.opts.ClientGoPrograms...)
	if err != nil || t.opts.NetNS == "" {
		return found, err
	}
	return InNetNS(procRoot, t.opts.NetNS, found)
}

// InNetNS keeps the processes of found that run in the network namespace
// of the file netns. It is read at every call: a node's namespace made
// anew (its node restarted) is followed, not the old one's inode.
func InNetNS(procRoot, netns string, found []Found) ([]Found, error) {
	want, err := nsInode(netns)
	if err != nil {
		return nil, fmt.Errorf("the network namespace to follow (--node-netns=%s): %w", netns, err)
	}
	var out []Found
	for _, f := range found {
		if ino, err := nsInode(filepath.Join(procRoot, strconv.Itoa(f.PID), "ns", "net")); err == nil && ino == want {
			out = append(out, f)
		}
	}
	return out, nil
}

func nsInode(path string) (uint64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no inode", path)
	}
	return st.Ino, nil
}

// hasRows says whether the tracer would attach anything to a component:
// one whose rows are all detail rows is left alone unless some of them were
// asked for (--detail, or by ID with --detail-rows).
func (t *Tracer) hasRows(c Component) bool {
	for i := range t.rows {
		if t.rowFor(&t.rows[i], c) && t.wants(&t.rows[i]) {
			return true
		}
	}
	return false
}

// wants says whether the options attach row r: every default row, and the
// detail rows that --detail or --detail-rows asked for.
func (t *Tracer) wants(r *Row) bool {
	return !r.Detail || t.opts.Detail || slices.Contains(t.opts.DetailRows, r.ID)
}

// startTimeIn reads field 22 of /proc/PID/stat (start time in clock ticks
// since boot): a PID reused by a new process has a different one.
func startTimeIn(procRoot string, pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, fmt.Errorf("read process start time: %w", err)
	}
	// comm (field 2) may hold spaces and parentheses: split after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields after comm", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// AttachEvent reports the outcome of attaching to, or detaching from, a process.
type AttachEvent struct {
	Process  *Process // nil if the binary could not even be opened
	Found    Found
	Detached bool
	Err      error
}

// Watch keeps the tracer attached to every component process under
// procRoot: new processes (a component started or restarted) are attached,
// processes that exited are detached. It scans every interval until ctx
// ends, reporting each change to report, and calls scanned after each full
// pass (readiness: every component found so far is attached).
func (t *Tracer) Watch(ctx context.Context, procRoot string, interval time.Duration, report func(AttachEvent), scanned func()) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	failed := map[Found]bool{} // do not retry a binary that failed, until it restarts
	for {
		found, err := t.Find(procRoot)
		if err != nil {
			return err
		}
		alive := map[int]Found{}
		for _, f := range found {
			alive[f.PID] = f
		}
		for _, p := range t.Processes() {
			if f, ok := alive[p.PID]; !ok || f.StartTime != p.StartTime {
				t.Detach(p.PID)
				report(AttachEvent{Process: p, Found: Found{PID: p.PID, Component: p.Component, Exe: p.Exe, StartTime: p.StartTime}, Detached: true})
			}
		}
		attached := map[int]bool{}
		for _, p := range t.Processes() {
			attached[p.PID] = true
		}
		for _, f := range found {
			if attached[f.PID] || failed[f] || !t.hasRows(f.Component) {
				continue
			}
			if f.Refused != "" {
				failed[f] = true
				report(AttachEvent{Found: f, Err: errors.New(f.Refused)})
				continue
			}
			p, err := t.AttachIn(procRoot, f.PID, f.Component)
			if p == nil {
				failed[f] = true
			}
			report(AttachEvent{Process: p, Found: f, Err: err})
		}
		for f := range failed {
			if _, ok := alive[f.PID]; !ok {
				delete(failed, f)
			}
		}
		if scanned != nil {
			scanned()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// rowFor says whether row r is for component c: its own rows, the
// AnyClientGo rows for the client-go programs the agent was told to follow
// and for the operators it found, and the AnyOperator rows for those.
func (t *Tracer) rowFor(r *Row, c Component) bool {
	switch r.Component {
	case c:
		return true
	case AnyClientGo:
		return slices.Contains(t.opts.ClientGoPrograms, string(c)) || t.ops.Has(c)
	case AnyOperator:
		return t.ops.Has(c)
	}
	return false
}
