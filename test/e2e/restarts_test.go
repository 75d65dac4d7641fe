package e2e

// Restarts (R2): etcd, kube-apiserver, kube-scheduler and the kubelet each
// killed -9 and started again by the lab. The agent attaches to each new
// process (how long after it started is printed: the scan interval bounds
// it), forgets the old one, and traces resume.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// processStart is when a process started, from /proc/PID/stat (clock ticks
// since boot) and the boot time in /proc/stat.
func processStart(t *testing.T, pid int) time.Time {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces: fields start after its ')'.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ticks, _ := strconv.ParseInt(f[19], 10, 64) // starttime, field 22
	st, _ := os.ReadFile("/proc/stat")
	var btime int64
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			btime, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	const hz = 100 // USER_HZ on Linux
	return time.Unix(btime, 0).Add(time.Duration(ticks) * time.Second / hz)
}

func TestRestartedComponentsAreReattached(t *testing.T) {
	se := begin(t, 6*time.Minute, "kpath-e2e-restarts-")
	l, ctx, a := se.l, se.ctx, se.a
	root := dsRepoRoot(t)
	for _, c := range []string{"etcd", "kube-apiserver", "kube-scheduler", "kubelet"} {
		old := l.pid(t, c)
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %s: %v", c, err)
		}
		for syscall.Kill(old, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		// The lab starts what is missing and waits until it is healthy;
		// meanwhile, watch for the new process and the agent attaching to it.
		up := exec.CommandContext(ctx, filepath.Join(root, "test/lab/up.sh"))
		up.Env = append(os.Environ(), "KPATH_LAB_DIR="+l.dir, "KPATH_LAB_FLAVOUR="+l.flavour)
		var out strings.Builder
		up.Stdout, up.Stderr = &out, &out
		if err := up.Start(); err != nil {
			t.Fatal(err)
		}
		upDone := make(chan error, 1)
		go func() { upDone <- up.Wait() }()
		pid := 0
		var attached time.Time
		err := waitFor(ctx, c+" restarted and re-attached", func() (bool, error) {
			select {
			case err := <-upDone:
				if err != nil {
					return false, fmt.Errorf("restart %s with test/lab/up.sh: %w\n%s", c, err, out.String())
				}
				upDone <- nil // seen: keep it for the wait below
			default:
			}
			if pid == 0 {
				b, err := os.ReadFile(filepath.Join(l.dir, "run", c+".pid"))
				if p, _ := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p != old && syscall.Kill(p, 0) == nil {
					pid = p
				}
				return false, nil
			}
			if m, err := a.scrape(); err == nil && m.sum("kpath_attached_probes", "component", c, "pid", strconv.Itoa(pid)) > 0 {
				attached = time.Now()
				return true, nil
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("%s (new pid %d): %v", c, pid, err)
		}
		if err := <-upDone; err != nil {
			t.Fatalf("restart %s with test/lab/up.sh: %v\n%s", c, err, out.String())
		}
		started := processStart(t, pid)
		m, _ := a.scrape()
		if n := m.sum("kpath_attached_probes", "component", c, "pid", strconv.Itoa(old)); n != 0 {
			t.Errorf("%s: the killed process %d still has %v probes in the agent's books", c, old, n)
		}
		// Polled every 250 ms: the delay printed is at most that late.
		t.Logf("%s: pid %d → %d, attached ≤ %v after the new process started", c, old, pid, attached.Sub(started).Round(10*time.Millisecond))
	}
	checkCreatesTraced(ctx, t, l, se.rcv, se.ns, "after-restarts", 5)
}
