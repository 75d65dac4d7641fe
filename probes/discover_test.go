package probes

import (
	"os"
	"os/exec"
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
