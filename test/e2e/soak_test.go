package e2e

// Exporter faults, the long version (issue 10, R4): the agent traces a
// steady write load while its collector is down for minutes, then back at
// the same address, then stalled (takes requests, never answers), then
// answering again. Memory stays bounded, what is lost is counted, and spans
// flow again without a restart. make soak runs it (10 minutes down, 2
// stalled); make test has the short version in export
// (TestOTLPSurvivesAStallAndAnOutage).

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kpath/kpath/export/otlptest"
)

// soakDuration is the env variable's duration, def when unset; the soak
// tests run only under KPATH_SOAK=1.
func soakDuration(t *testing.T, env string, def time.Duration) time.Duration {
	t.Helper()
	if os.Getenv("KPATH_SOAK") != "1" {
		t.Skip("skipped: a soak test (minutes to hours): make soak runs it with KPATH_SOAK=1")
	}
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", env, v, err)
	}
	return d
}

func TestSoakExporterOutageAndStall(t *testing.T) {
	outage := soakDuration(t, "KPATH_SOAK_OUTAGE", 10*time.Minute)
	stall := soakDuration(t, "KPATH_SOAK_STALL", 2*time.Minute)
	se := begin(t, outage+stall+10*time.Minute, "kpath-e2e-soak-")
	l, ctx, a, ns := se.l, se.ctx, se.a, se.ns
	addr := se.rcv.Addr()

	// The load: 20 ConfigMap creates a second, every request checked.
	var writes, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			writes.Add(1)
			if _, err := l.client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("soak-%06d", i)}}, metav1.CreateOptions{}); err != nil {
				failed.Add(1)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	// RSS every second through every phase.
	var mu sync.Mutex
	peak, phasePeak := int64(0), map[string]int64{}
	phase := "healthy"
	rssCtx, rssStop := context.WithCancel(ctx)
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		for rssCtx.Err() == nil {
			r := rssBytes(t, a.cmd.Process.Pid)
			mu.Lock()
			peak, phasePeak[phase] = max(peak, r), max(phasePeak[phase], r)
			mu.Unlock()
			select {
			case <-rssCtx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	enter := func(p string) {
		mu.Lock()
		phase = p
		mu.Unlock()
		t.Logf("%s: %s (%d writes so far, agent RSS %d MiB)", time.Now().Format(time.TimeOnly), p, writes.Load(), rssBytes(t, a.cmd.Process.Pid)>>20)
	}
	dropped := func() (exportFailed, queueFull float64) {
		m, err := a.scrape()
		if err != nil {
			t.Fatalf("the agent stopped serving /metrics: %v", err)
		}
		return m.sum("kpath_export_dropped_spans_total", "reason", "export_failed"), m.sum("kpath_export_dropped_spans_total", "reason", "queue_full")
	}

	time.Sleep(30 * time.Second)
	checkCreatesTraced(ctx, t, l, se.rcv, ns, "healthy", 5)

	enter("collector down")
	se.rcv.Stop()
	time.Sleep(outage)
	f1, q1 := dropped()
	rcv := otlptest.StartAt(t, addr)
	back := time.Now()
	enter("collector back")
	if _, err := rcv.WaitSpans(ctx, 1); err != nil {
		t.Fatalf("no span reached the collector after it came back: %v", err)
	}
	recovered := time.Since(back)
	checkCreatesTraced(ctx, t, l, rcv, ns, "after-outage", 5)

	enter("collector stalled")
	rcv.Stall()
	time.Sleep(stall)
	f2, q2 := dropped()
	rcv.Resume()
	enter("collector answering")
	checkCreatesTraced(ctx, t, l, rcv, ns, "after-stall", 5)

	rssStop()
	<-rssDone
	t.Logf("%d writes, %d failed; down %v: %.0f spans dropped export_failed, %.0f queue_full; spans again %v after the collector came back; stalled %v: %.0f more export_failed, %.0f more queue_full",
		writes.Load(), failed.Load(), outage, f1, q1, recovered.Round(time.Millisecond), stall, f2-f1, q2-q1)
	t.Logf("agent RSS peak %d MiB: %v", peak>>20, mibs(phasePeak))
	if failed.Load() > 0 {
		t.Errorf("%d of %d writes failed", failed.Load(), writes.Load())
	}
	if f1+q1 == 0 || f2+q2 == f1+q1 {
		t.Errorf("spans lost while the collector was down (%v) or stalled (%v) were not counted", f1+q1, f2+q2-f1-q1)
	}
	// The queue holds 4096 traces; ~70 MiB steady.
	if peak > 256<<20 {
		t.Errorf("agent RSS peaked at %d MiB, want < 256", peak>>20)
	}
}

func mibs(m map[string]int64) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = fmt.Sprintf("%d MiB", v>>20)
	}
	return out
}
