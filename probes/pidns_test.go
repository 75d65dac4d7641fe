package probes

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// TestTracerInNestedPIDNamespace runs the tracer and its target inside a new
// PID namespace (as in a kind node, where the agent's hostPID is the node
// container's): the PIDs the BPF program reports must be the ones the tracer
// found in its /proc, or every event is dropped.
func TestTracerInNestedPIDNamespace(t *testing.T) {
	needBPF(t)
	if os.Getenv("KPATH_PIDNS_INNER") == "1" {
		t.Skip("skipped: the inner half runs as TestTracerInNestedPIDNamespaceInner")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("skipped: unshare (util-linux) is not installed")
	}
	target := buildTarget(t)
	cmd := exec.Command("unshare", "--pid", "--fork", "--mount-proc", os.Args[0], "-test.run=^TestTracerInNestedPIDNamespaceInner$", "-test.v")
	cmd.Env = append(os.Environ(), "KPATH_PIDNS_INNER=1", "KPATH_PIDNS_TARGET="+target)
	out, err := cmd.CombinedOutput()
	t.Logf("inner run:\n%s", out)
	if err != nil {
		t.Fatalf("inner run failed: %v", err)
	}
}

func TestTracerInNestedPIDNamespaceInner(t *testing.T) {
	if os.Getenv("KPATH_PIDNS_INNER") != "1" {
		t.Skip("skipped: runs only inside the namespace TestTracerInNestedPIDNamespace makes")
	}
	tr := newTracer(t, Options{Rows: testRows})
	tg := startTarget(t, os.Getenv("KPATH_PIDNS_TARGET"))
	if tg.cmd.Process.Pid > 100 {
		t.Fatalf("target pid %d: not in a new PID namespace", tg.cmd.Process.Pid)
	}
	if _, err := tr.Attach(tg.cmd.Process.Pid, testComponent); err != nil {
		t.Fatal(err)
	}
	var (
		mu sync.Mutex
		n  int
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- tr.Read(ctx, func(e Event) { mu.Lock(); n++; mu.Unlock() }) }()
	tg.run(t, 20)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		got := n
		mu.Unlock()
		if got >= 40 {
			break
		}
	}
	cancel()
	<-done
	if n != 40 {
		t.Errorf("%d events from the target in pid %d, want 40; decode errors %+v", n, tg.cmd.Process.Pid, tr.DecodeErrors())
	}
}
