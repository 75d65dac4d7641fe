package e2e

// Chaos (R1): the agent killed -9 again and again while pods churn and
// ConfigMaps are written. Nothing it traces notices: no component restarts,
// every client request succeeds, no probe outlives its agent, and the next
// agent traces whole writes. make test kills it 10 times at 2–4 s
// intervals; docs/reliability.md has the long version's plan.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kpath/kpath/export/otlptest"
)

// uprobeLinks counts the uprobe links in the kernel, whoever holds them.
func uprobeLinks(t *testing.T) int {
	t.Helper()
	it := new(link.Iterator)
	defer it.Close()
	n := 0
	for it.Next() {
		info, err := it.Link.Info()
		if err == nil && (info.Type == link.UprobeMultiType || info.Type == link.PerfEventType) {
			n++
		}
	}
	if err := it.Err(); err != nil {
		t.Fatalf("list BPF links: %v", err)
	}
	return n
}

func TestAgentKilledUnderLoadHurtsNothing(t *testing.T) {
	l := needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ns := makeNamespace(ctx, t, l, "kpath-e2e-chaos-")
	if n := uprobeLinks(t); n != 0 {
		t.Fatalf("%d uprobe links before the test: another tracer is running", n)
	}
	components := []string{"etcd", "kube-apiserver", "kube-scheduler", "kubelet"}
	pids := map[string]int{}
	for _, c := range components {
		pids[c] = l.pid(t, c)
	}

	// The load: ConfigMap creates and pod create/delete churn, every
	// request checked.
	var requests, failures atomic.Int64
	// The first failure, kept once: an atomic.Value would panic when a
	// later failure's error is of another type.
	var firstOnce sync.Once
	var firstErr error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	fail := func(err error) {
		failures.Add(1)
		firstOnce.Do(func() { firstErr = err })
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			requests.Add(1)
			if _, err := l.client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%04d", i)}}, metav1.CreateOptions{}); err != nil {
				fail(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		zero := int64(0)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("churn-%04d", i)
			requests.Add(2)
			if _, err := l.client.CoreV1().Pods(ns).Create(ctx, runningPod(name), metav1.CreateOptions{}); err != nil {
				fail(err)
				continue
			}
			time.Sleep(500 * time.Millisecond)
			if err := l.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
				fail(err)
			}
		}
	}()

	rcv := otlptest.Start(t)
	const kills = 10
	for k := range kills {
		a := startAgent(t, rcv.Addr())
		time.Sleep(2*time.Second + rand.N(2*time.Second))
		if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 agent %d: %v", k, err)
		}
		a.cmd.Wait()
	}
	close(stop)
	wg.Wait()
	t.Logf("%d agents killed -9; %d client requests, %d failed", kills, requests.Load(), failures.Load())
	if failures.Load() > 0 {
		t.Errorf("%d of %d client requests failed while the agent was killed, e.g. %v", failures.Load(), requests.Load(), firstErr)
	}
	for _, c := range components {
		if pid := l.pid(t, c); pid != pids[c] || syscall.Kill(pid, 0) != nil {
			t.Errorf("%s restarted or died while the agent was killed (pid %d, was %d)", c, pid, pids[c])
		}
	}
	// The kernel frees a dead agent's links with its file descriptors.
	deadline := time.Now().Add(5 * time.Second)
	for uprobeLinks(t) != 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := uprobeLinks(t); n != 0 {
		t.Errorf("%d uprobe links left behind by killed agents", n)
	}

	// The next agent traces whole writes.
	rcv = otlptest.Start(t)
	startAgent(t, rcv.Addr())
	checkCreatesTraced(ctx, t, l, rcv, ns, "after-chaos", 5)
}
