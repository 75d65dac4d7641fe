package e2e

// Chaos (R1): the agent killed -9 again and again while pods churn and
// ConfigMaps are written. Nothing it traces notices: no component restarts,
// every client request succeeds, no probe outlives its agent, and the next
// agent traces whole writes. make test kills it 10 times at 2–4 s
// intervals; make soak (KPATH_SOAK_LIFECYCLES=10000) keeps killing it at
// 2–10 s intervals until that many pods have been created, run and been
// deleted, from four churners.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
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
	// make test: 10 kills 2–4 s apart, one churner; the soak: kills 2–10 s
	// apart until the churners have made lifecycles pods live and die.
	kills, lifecycles, churners, gap := 10, int64(0), 1, 2*time.Second
	timeout := 5 * time.Minute
	if v := os.Getenv("KPATH_SOAK_LIFECYCLES"); v != "" && os.Getenv("KPATH_SOAK") == "1" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("KPATH_SOAK_LIFECYCLES=%q: want a count", v)
		}
		kills, lifecycles, churners, gap = 0, n, 4, 8*time.Second
		timeout = time.Duration(n)*time.Second + 10*time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
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
	var lived, neverRan atomic.Int64
	wg.Add(1 + churners)
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
	for c := range churners {
		go func() {
			defer wg.Done()
			zero := int64(0)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := fmt.Sprintf("churn-%d-%05d", c, i)
				requests.Add(2)
				if _, err := l.client.CoreV1().Pods(ns).Create(ctx, runningPod(name), metav1.CreateOptions{}); err != nil {
					fail(err)
					continue
				}
				if lifecycles > 0 {
					// The soak's lifecycle is whole: the pod runs before it is deleted.
					if !podRunsWithin(ctx, l, ns, name, 30*time.Second) {
						neverRan.Add(1)
					}
				} else {
					time.Sleep(500 * time.Millisecond)
				}
				if err := l.client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
					fail(err)
					continue
				}
				lived.Add(1)
			}
		}()
	}

	rcv := otlptest.Start(t)
	k := 0
	for ; k < kills || lived.Load() < lifecycles; k++ {
		if ctx.Err() != nil {
			t.Fatalf("after %d kills and %d pod lifecycles: %v", k, lived.Load(), ctx.Err())
		}
		a := startAgent(t, rcv.Addr())
		time.Sleep(2*time.Second + rand.N(gap))
		if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 agent %d: %v", k, err)
		}
		a.cmd.Wait()
		if lifecycles > 0 && k%100 == 99 {
			t.Logf("%d kills, %d pod lifecycles, %d client requests, %d failed", k+1, lived.Load(), requests.Load(), failures.Load())
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d agents killed -9; %d pod lifecycles (%d not Running within 30 s); %d client requests, %d failed", k, lived.Load(), neverRan.Load(), requests.Load(), failures.Load())
	if neverRan.Load() > 0 {
		t.Errorf("%d pods did not run within 30 s while the agent was killed", neverRan.Load())
	}
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

// podRunsWithin waits until the pod is Running, for at most d.
func podRunsWithin(ctx context.Context, l *lab, ns, name string, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(200 * time.Millisecond) {
		if p, err := l.client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{}); err == nil && p.Status.Phase == corev1.PodRunning {
			return true
		}
	}
	return false
}
