package probes

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestInNetNSKeepsOneNode runs one process in the test's network namespace
// and one in a namespace of its own (as the lab's second node does), and
// follows each namespace in turn: each filter keeps its own process only.
func TestInNetNSKeepsOneNode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: a network namespace of its own needs root (unshare --net)")
	}
	start := func(args ...string) *exec.Cmd {
		cmd := exec.Command(args[0], args[1:]...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	here := start("sleep", "60")
	apart := start("unshare", "--net", "sleep", "60")
	// unshare execs sleep once the namespace is made: wait for it to move.
	self, _ := nsInode("/proc/self/ns/net")
	deadline := time.Now().Add(5 * time.Second)
	for {
		ino, err := nsInode("/proc/" + strconv.Itoa(apart.Process.Pid) + "/ns/net")
		if err == nil && ino != self {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("unshare --net did not move its process to a network namespace of its own")
		}
		time.Sleep(10 * time.Millisecond)
	}
	found := []Found{{PID: here.Process.Pid, Component: Kubelet}, {PID: apart.Process.Pid, Component: Kubelet}}
	for _, c := range []struct {
		netns string
		want  int
	}{
		{"/proc/self/ns/net", here.Process.Pid},
		{"/proc/" + strconv.Itoa(apart.Process.Pid) + "/ns/net", apart.Process.Pid},
	} {
		got, err := InNetNS("/proc", c.netns, found)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].PID != c.want {
			t.Errorf("following %s kept %+v, want only pid %d", c.netns, got, c.want)
		}
	}
	if _, err := InNetNS("/proc", "/run/netns/kpath-no-such-node", found); err == nil || !strings.Contains(err.Error(), "--node-netns=/run/netns/kpath-no-such-node") {
		t.Errorf("a namespace file that is not there: error %v, want one naming the flag and the file", err)
	}
}

// TestScanLooksAgainOnlyAtAnExec: a process judged not ours is skipped by
// the next scans until its exe changes (an exec) — then it is found.
func TestScanLooksAgainOnlyAtAnExec(t *testing.T) {
	root, bins := t.TempDir(), t.TempDir()
	other, apiserver := filepath.Join(bins, "sleep"), filepath.Join(bins, "kube-apiserver")
	for _, b := range []string{other, apiserver} {
		if err := os.WriteFile(b, []byte("not an ELF"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(root, "4242")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stat := "4242 (x) S " + strings.Repeat("0 ", 18) + "777 0\n"
	for name, body := range map[string]string{"stat": stat, "comm": "sleep\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	exe := filepath.Join(dir, "exe")
	point := func(to string) {
		os.Remove(exe)
		if err := os.Symlink(to, exe); err != nil {
			t.Fatal(err)
		}
	}
	var memory notOurs
	scan := func() []Found {
		t.Helper()
		found, err := findProcesses(root, nil, &memory)
		if err != nil {
			t.Fatal(err)
		}
		return found
	}
	point(other)
	if f := scan(); len(f) != 0 {
		t.Fatalf("a sleep process found as %+v", f)
	}
	if !memory.has(4242, other) {
		t.Fatal("the scan did not remember pid 4242 as not ours")
	}
	// Its comm now names a component: a fresh look would report an
	// impostor, a remembered process is not looked at.
	if err := os.WriteFile(filepath.Join(dir, "comm"), []byte("kube-apiserver\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if f := scan(); len(f) != 0 {
		t.Fatalf("a remembered process was looked at again: %+v", f)
	}
	point(apiserver) // it exec'd kube-apiserver
	f := scan()
	if len(f) != 1 || f[0].PID != 4242 || f[0].Component != "kube-apiserver" || f[0].StartTime != 777 {
		t.Fatalf("after the exec: found %+v, want pid 4242 as kube-apiserver started at 777", f)
	}
	if memory.has(4242, apiserver) {
		t.Error("a component is remembered as not ours")
	}
}
