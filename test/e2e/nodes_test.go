package e2e

// A second node: a pod scheduled there has one trace in Jaeger, assembled
// from the control-plane agent's spans and the node's agent's, which never
// talk to each other.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kpath/kpath/correlate"
)

// secondNode returns the lab's node 2 (its name and network namespace),
// bringing it up with test/lab/node.sh for this test when the lab runs
// without it (KPATH_LAB_NODES=2 make lab-up leaves it up).
func secondNode(t *testing.T, l *lab) (name, netns string) {
	t.Helper()
	if name, netns = l.env("KPATH_LAB_NODE2"), l.env("KPATH_LAB_NODE2_NETNS"); name != "" && netns != "" {
		return name, netns
	}
	root := dsRepoRoot(t)
	if out, err := dsRun(t, root, nil, "test/lab/node.sh", "up", "2"); err != nil {
		t.Fatalf("test/lab/node.sh up 2: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := dsRun(t, root, nil, "test/lab/node.sh", "down", "2"); err != nil {
			t.Errorf("test/lab/node.sh down 2: %v\n%s", err, out)
		}
	})
	return "kpath-lab-node2", "/run/netns/kpath-node2"
}

func TestPodOnSecondNodeIsOneTraceFromTwoAgents(t *testing.T) {
	l := needLab(t)
	query, otlp := needJaeger(t, l) // where the two agents' spans meet
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	node1 := l.env("KPATH_LAB_NODE")
	node2, netns2 := secondNode(t, l)

	// Each agent follows its own node's processes only: the first the
	// host's namespace (the control plane and the first kubelet), the
	// second node 2's (its kubelet). Neither is told of the other.
	cp := startAgent(t, otlp, "--node-netns=/proc/self/ns/net", "--node-name="+node1)
	na := startAgentFor(t, []string{"kubelet"}, otlp, "--node-netns="+netns2, "--node-name="+node2)
	m, err := na.scrape()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"kube-apiserver", "etcd", "kube-scheduler", "kube-controller-manager"} {
		if n := m.sum("kpath_attached_probes", "component", c); n != 0 {
			t.Errorf("node 2's agent attached %v probes to %s, which runs outside node 2's namespace", n, c)
		}
	}
	kubelet2 := l.pid(t, "node2-kubelet")
	for _, s := range m {
		if s.name == "kpath_attached_probes" && s.labels["component"] == "kubelet" && s.labels["pid"] != strconv.Itoa(kubelet2) {
			t.Errorf("node 2's agent is attached to kubelet pid %s, not node 2's (%d)", s.labels["pid"], kubelet2)
		}
	}
	cm, err := cp.scrape()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cm {
		if s.name == "kpath_attached_probes" && s.labels["pid"] == strconv.Itoa(kubelet2) {
			t.Errorf("the control-plane agent is attached to node 2's kubelet (pid %d)", kubelet2)
		}
	}

	ns := makeNamespace(ctx, t, l, "kpath-e2e-node2-")
	const n = 3
	for i := range n {
		p := runningPod(fmt.Sprintf("n2-%d", i))
		p.Spec.NodeSelector = map[string]string{"kpath.dev/lab-node": "node2"}
		p.Spec.Tolerations = []corev1.Toleration{{Key: "kpath.dev/lab-node", Operator: corev1.TolerationOpEqual, Value: "node2", Effect: corev1.TaintEffectNoSchedule}}
		if _, err := l.client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods, err := waitRunning(ctx, l, ns, n)
	if err != nil {
		t.Fatal(err)
	}

	for _, p := range pods {
		if p.Spec.NodeName != node2 {
			t.Fatalf("pod %s ran on %q, not %s", p.Name, p.Spec.NodeName, node2)
		}
		id := correlate.PodTraceID(string(p.UID))
		var tr *trace
		var problem error
		err := waitFor(ctx, "pod "+p.Name+"'s trace in Jaeger from both agents", func() (bool, error) {
			var res map[string]map[string]string
			var err error
			if tr, res, err = jaegerGetResources(ctx, query, id); err != nil || tr == nil {
				problem = err
				return false, nil
			}
			problem = checkTwoAgents(tr, res, node1, node2)
			return problem == nil, nil
		})
		if err != nil {
			if tr != nil {
				t.Logf("pod %s's trace as Jaeger last returned it:\n%s", p.Name, tr.dump())
			}
			t.Fatalf("%v: %v", err, problem)
		}
		t.Logf("pod %s: %d spans in one trace from the agents of %s and %s", p.Name, len(tr.spans), node1, node2)
	}

	// What each agent is connected to, now that both have exported: never
	// the other (its metrics address, or any socket it listens on).
	for _, pair := range []struct {
		from, to *agent
		what     string
	}{{cp, na, "the control-plane agent to node 2's"}, {na, cp, "node 2's agent to the control plane's"}} {
		peers, _, err := tcpSockets(pair.from.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		_, listens, err := tcpSockets(pair.to.cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			if listens[p] {
				t.Errorf("a connection from %s agent, to %s", pair.what, p)
			}
		}
		if len(listens) == 0 {
			t.Errorf("%s: the second agent listens on nothing, which makes the check vacuous", pair.what)
		}
	}
}

// checkTwoAgents says what is wrong with a pod's trace from two agents:
// one root, from the control-plane agent's node, naming node 2 as where
// the kubelet's part comes from; every parent in the trace; spans of
// kube-apiserver, etcd and kube-scheduler sent from node 1, the kubelet's
// sandbox and container start from node 2; each agent's spans inside their
// parents when the parent is its own.
func checkTwoAgents(tr *trace, res map[string]map[string]string, node1, node2 string) error {
	byID := map[string]*tracepb.Span{}
	for _, s := range tr.spans {
		byID[string(s.SpanId)] = s
	}
	roots := 0
	seen := map[string]bool{}
	for _, s := range tr.spans {
		a := attrs(s)
		comp, _ := a["kpath.component"].(string)
		from := res[string(s.SpanId)]["k8s.node.name"]
		want := node1
		if comp == "kubelet" {
			want = node2
		}
		if from != want {
			return fmt.Errorf("span %q of %s came from the agent of %q, want %s", s.Name, comp, from, want)
		}
		seen[comp+"@"+from] = true
		if comp == "kubelet" {
			seen[s.Name] = true
		}
		if len(s.ParentSpanId) == 0 {
			roots++
			if a["kpath.kubelet_part_from"] != node2 || a["kpath.complete"] != true {
				return fmt.Errorf("root %q: kpath.kubelet_part_from %v, kpath.complete %v; want %s, true", s.Name, a["kpath.kubelet_part_from"], a["kpath.complete"], node2)
			}
			continue
		}
		p, ok := byID[string(s.ParentSpanId)]
		if !ok {
			return fmt.Errorf("span %q: parent missing", s.Name)
		}
		if res[string(p.SpanId)]["k8s.node.name"] == from && (s.StartTimeUnixNano < p.StartTimeUnixNano || s.EndTimeUnixNano > p.EndTimeUnixNano) {
			return fmt.Errorf("span %q not inside its parent %q from the same agent", s.Name, p.Name)
		}
	}
	if roots != 1 {
		return fmt.Errorf("%d roots", roots)
	}
	for _, w := range []string{"kube-apiserver@" + node1, "etcd@" + node1, "kube-scheduler@" + node1, "kubelet@" + node2, "create sandbox", "start container app"} {
		if !seen[w] {
			return fmt.Errorf("no %s span yet", w)
		}
	}
	return nil
}

// tcpSockets lists the TCP sockets process pid holds: the remote ends of
// its connections and the local addresses it listens on, as ip:port.
func tcpSockets(pid int) (peers []string, listens map[string]bool, err error) {
	inodes := map[string]bool{}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, nil, err
	}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name())); err == nil {
			if ino, ok := strings.CutPrefix(l, "socket:["); ok {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
	}
	listens = map[string]bool{}
	for _, file := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			return nil, nil, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // the header
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || !inodes[fs[9]] {
				continue
			}
			switch fs[3] {
			case "0A": // LISTEN
				a := hexAddr(fs[1])
				listens[a] = true
				if port, ok := strings.CutPrefix(a, "0.0.0.0:"); ok {
					listens["127.0.0.1:"+port] = true
				}
			case "01": // ESTABLISHED
				peers = append(peers, hexAddr(fs[2]))
			}
		}
		f.Close()
	}
	return peers, listens, nil
}

// hexAddr turns /proc/net/tcp's 0100007F:1F90 into 127.0.0.1:8080 (IPv4,
// and IPv4-mapped IPv6; other IPv6 stays in hex, compared as it is).
func hexAddr(s string) string {
	host, port, _ := strings.Cut(s, ":")
	p, _ := strconv.ParseUint(port, 16, 16)
	if len(host) == 32 && strings.HasPrefix(host, "0000000000000000FFFF0000") {
		host = host[24:]
	}
	if len(host) == 8 {
		v, _ := strconv.ParseUint(host, 16, 32)
		return fmt.Sprintf("%d.%d.%d.%d:%d", v&0xff, v>>8&0xff, v>>16&0xff, v>>24, p)
	}
	return host + ":" + strconv.FormatUint(p, 10)
}
