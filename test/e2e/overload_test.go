package e2e

// Overload (issue R3): a ring buffer far too small for a burst of writes.
// The agent loses events, counts every one by reason, stays within its
// memory, keeps serving, and traces whole writes again once the burst is
// over. What the burst costs the traced components is the benchmark's
// business (make bench), not a timed assertion here.

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kpath/kpath/export/otlptest"
)

// rssBytes is a process's resident set, from /proc/PID/status.
func rssBytes(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("agent status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

func TestOverloadIsCountedAndSurvived(t *testing.T) {
	// One page: a few dozen events fit; a burst of creates from 16 clients
	// overflows it many times over.
	se := begin(t, 4*time.Minute, "kpath-e2e-overload-", "--ring-bytes=4096")
	l, ctx, a, ns := se.l, se.ctx, se.a, se.ns
	before, err := a.scrape()
	if err != nil {
		t.Fatal(err)
	}
	cms := l.client.CoreV1().ConfigMaps(ns)
	const clients, each = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	var peak int64
	stopRSS := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		for {
			select {
			case <-stopRSS:
				return
			case <-time.After(100 * time.Millisecond):
				peak = max(peak, rssBytes(t, a.cmd.Process.Pid))
			}
		}
	}()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("burst-%02d-%02d", c, i)}}, metav1.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("burst create: %v", err)
	}
	time.Sleep(3 * time.Second) // the agent copies BPF's counters every 2 s
	close(stopRSS)
	<-rssDone
	after, err := a.scrape()
	if err != nil {
		t.Fatalf("the agent stopped serving /metrics after the burst: %v", err)
	}
	d := func(name string, kv ...string) float64 { return after.sum(name, kv...) - before.sum(name, kv...) }
	full := d("kpath_events_dropped_total", "reason", "ringbuf_full")
	t.Logf("burst of %d creates: ringbuf_full %.0f, traces %.0f (incomplete %.0f), agent RSS peak %d MiB",
		clients*each, full, d("kpath_traces_total"), d("kpath_traces_total", "complete", "false"), peak>>20)
	if full == 0 {
		t.Error("a one-page ring buffer under a burst of 640 creates dropped nothing: the overload was not reached, or its drops are not counted")
	}
	// ~70 MiB steady; the DaemonSet's limit is 512 MiB.
	if peak > 256<<20 {
		t.Errorf("agent RSS peaked at %d MiB under overload, want < 256", peak>>20)
	}

	// After the burst, writes at a normal pace are whole again.
	checkCreatesTraced(ctx, t, l, se.rcv, ns, "after-burst", 5)
}

// checkCreatesTraced creates n ConfigMaps named prefix-i, a tenth of a
// second apart, and waits for one whole trace of each at rcv.
func checkCreatesTraced(ctx context.Context, t *testing.T, l *lab, rcv *otlptest.Receiver, ns, prefix string, n int) {
	t.Helper()
	cms := l.client.CoreV1().ConfigMaps(ns)
	var exp []expected
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var rev int64
		fmt.Sscan(cm.ResourceVersion, &rev)
		exp = append(exp, expected{"create", "POST", "/registry/configmaps/" + ns + "/" + name, rev})
		time.Sleep(100 * time.Millisecond)
	}
	var traces map[string]*trace
	err := waitFor(ctx, "whole traces of "+prefix+" writes", func() (bool, error) {
		traces = groupTraces(rcv.Spans())
		for _, w := range exp {
			if got := find(traces, w); len(got) != 1 || check(got[0], w) != nil {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		for _, w := range exp {
			got := find(traces, w)
			if len(got) != 1 {
				t.Errorf("%s: %d traces", w.key, len(got))
			} else if err := check(got[0], w); err != nil {
				t.Errorf("%s: %v%s", w.key, err, describe(got[0]))
			}
		}
		t.Fatal(err)
	}
}
