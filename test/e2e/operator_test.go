package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kpath/kpath/correlate"
)

// TestOperatorWatchLagIsTraced runs a client-go program of its own (an
// informer on pods: testdata/podwatcher), tells the agent about it with
// --client-go-programs, and stops it for 3 s while a pod is created: the
// pod's trace must give that program its own watch lag, of at least the
// stop, while kube-scheduler's stays short. The pod is Running and its
// trace exported before the program sees the create, so its lag comes
// late, as more spans of the same trace.
func TestOperatorWatchLagIsTraced(t *testing.T) {
	se := begin(t, 4*time.Minute, "kpath-e2e-operator-", "--client-go-programs=podwatcher")
	l, ctx, rcv, a, ns := se.l, se.ctx, se.rcv, se.a, se.ns
	bin := filepath.Join(t.TempDir(), "podwatcher")
	build := exec.Command("go", "build", "-o", bin, "./testdata/podwatcher")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build podwatcher: %v\n%s", err, out)
	}
	w := exec.Command(bin, "--kubeconfig="+filepath.Join(labDir(), "admin.kubeconfig"), "--namespace="+ns)
	w.Stderr = os.Stderr
	out, err := w.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Process.Signal(syscall.SIGCONT); w.Process.Kill(); w.Wait() })
	synced := make([]byte, 7)
	if _, err := out.Read(synced); err != nil || string(synced) != "synced\n" {
		t.Fatalf("podwatcher did not sync: %q %v", synced, err)
	}

	err = waitFor(ctx, "the agent attached to podwatcher", func() (bool, error) {
		m, err := a.scrape()
		return err == nil && m.sum("kpath_attached_probes", "component", "podwatcher") > 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitQuiet(ctx, t, l)

	stopFor(t, w.Process.Pid, 3*time.Second, func() {
		if _, err := l.client.CoreV1().Pods(ns).Create(ctx, runningPod("watched"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	var pt *podTrace
	err = waitFor(ctx, "the pod's complete trace with podwatcher's lag", func() (bool, error) {
		got, err := l.client.CoreV1().Pods(ns).Get(ctx, "watched", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		pt = l.podTraces(rcv, []*corev1.Pod{got})[string(got.UID)]
		return pt != nil && pt.complete() && len(lagsOf(pt)["podwatcher"]) > 0, nil
	})
	if err != nil {
		t.Fatalf("%v: lags %v", err, lagsOf(pt))
	}
	lags := lagsOf(pt)
	t.Logf("watch lags, podwatcher stopped 3s: %v", lags)
	if d := slices.Max(lags["podwatcher"]); d < 3*time.Second {
		t.Errorf("podwatcher's watch lag %v, want ≥ 3s (it was stopped)", d)
	}
	if d := lags["kube-scheduler"]; len(d) == 0 || d[0] >= time.Second {
		t.Errorf("kube-scheduler's watch lag %v: want one, under 1s", d)
	}
}

// lagsOf gives each consumer's watch lags in a pod trace, first write first.
func lagsOf(pt *podTrace) map[string][]time.Duration {
	out := map[string][]time.Duration{}
	if pt == nil {
		return out
	}
	for _, s := range pt.stage(correlate.PodWatchLag) {
		c, _ := attrs(s)["kpath.component"].(string)
		out[c] = append(out[c], time.Duration(s.EndTimeUnixNano-s.StartTimeUnixNano))
	}
	return out
}

func lagsOfTrace(pt *podTrace) map[string][]time.Duration { return lagsOf(pt) }
