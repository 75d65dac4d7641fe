package e2e

// kpath as users run it: the DaemonSet of deploy/daemonset (lab overlay),
// from an image built without Docker, least privilege, traces to an OTLP
// receiver, `kpath-agent doctor` and `kubectl kpath explain`.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kpath/kpath/correlate"
	"github.com/kpath/kpath/export/otlptest"
)

// The capabilities the DaemonSet adds (deploy/daemonset/base/daemonset.yaml)
// and the CapEff bits they make: BPF 39, PERFMON 38, SYS_PTRACE 19. No
// SYS_ADMIN: the agent attaches with uprobe_multi links.
var (
	dsCaps   = []string{"BPF", "PERFMON", "SYS_PTRACE"}
	dsCapEff = uint64(1<<39 | 1<<38 | 1<<19)
)

const (
	dsNamespace = "kpath"
	dsSelector  = "app.kubernetes.io/name=kpath-agent"
	dsPods      = 20
)

// labEnv reads the lab's env file (export K='V' lines).
func dsLabEnv(t *testing.T, l *lab) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.dir, "env"))
	if err != nil {
		t.Fatalf("lab env: %v", err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		k, v, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "export "), "=")
		if ok {
			env[k] = strings.Trim(strings.TrimSpace(v), `'"`)
		}
	}
	return env
}

func dsRepoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

func dsRun(t *testing.T, dir string, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestDaemonSetLeastPrivilegeOnLab(t *testing.T) {
	l := needLab(t)
	env := dsLabEnv(t, l)
	kubectl := env["KUBECTL"]
	if kubectl == "" {
		t.Fatal("lab env has no KUBECTL")
	}
	root := dsRepoRoot(t)
	kenv := []string{"KUBECONFIG=" + filepath.Join(l.dir, "admin.kubeconfig")}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	// The image, as `make image-lab` builds it (static build, imagetool, ctr import).
	if out, err := dsRun(t, root, []string{"KPATH_LAB_DIR=" + l.dir}, "make", "--no-print-directory", "image-lab"); err != nil {
		t.Fatalf("make image-lab: %v\n%s", err, out)
	}
	plugins := t.TempDir()
	if out, err := dsRun(t, root, nil, "go", "build", "-o", filepath.Join(plugins, "kubectl-kpath"), "./cmd/kubectl-kpath"); err != nil {
		t.Fatalf("build kubectl-kpath: %v\n%s", err, out)
	}

	// An overlay of the lab overlay: this test's receiver and a free metrics port.
	rcv := otlptest.Start(t)
	port := freeAddr(t)[len("127.0.0.1:"):]
	overlay := t.TempDir()
	// kustomize takes bases only as relative paths.
	base, err := filepath.Rel(overlay, filepath.Join(root, "deploy/daemonset/overlays/lab"))
	if err != nil {
		t.Fatal(err)
	}
	kust := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - %s
configMapGenerator:
  - name: kpath-agent-config
    behavior: merge
    literals:
      - OTEL_EXPORTER_OTLP_ENDPOINT=%s
patches:
  - target: {kind: DaemonSet, name: kpath-agent}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/args/2
        value: --metrics-addr=0.0.0.0:%s
      - op: replace
        path: /spec/template/spec/containers/0/ports/0/containerPort
        value: %s
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --scan-interval=500ms
`, base, rcv.Addr(), port, port)
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kust), 0o644); err != nil {
		t.Fatal(err)
	}
	// A previous run that was killed may have left the DaemonSet behind.
	dsRun(t, root, kenv, kubectl, "delete", "-k", overlay, "--ignore-not-found", "--wait=true", "--timeout=90s")
	if out, err := dsRun(t, root, kenv, kubectl, "apply", "-k", overlay); err != nil {
		t.Fatalf("kubectl apply -k: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := dsRun(t, root, kenv, kubectl, "-n", dsNamespace, "logs", "-l", dsSelector, "--tail=40")
			t.Logf("agent log (tail):\n%s", out)
		}
		if out, err := dsRun(t, root, kenv, kubectl, "delete", "-k", overlay, "--ignore-not-found", "--wait=true", "--timeout=120s"); err != nil {
			t.Logf("kubectl delete -k: %v\n%s", err, out)
		}
	})

	agentPod, ns, names := dsAgentTracesPods(ctx, t, l, rcv, port)

	// doctor inside the agent pod: everything required is there, and
	// CAP_SYS_ADMIN is not required (uprobe_multi).
	out, err := dsRun(t, root, kenv, kubectl, "-n", dsNamespace, "exec", agentPod.Name, "--", "/usr/local/bin/kpath-agent", "doctor")
	if err != nil {
		t.Errorf("doctor in the agent pod: %v\n%s", err, out)
	} else if !strings.Contains(out, "every required check passed") || !strings.Contains(out, "kube-apiserver") {
		t.Errorf("doctor in the agent pod said:\n%s", out)
	} else if line := dsCheckLine(out, "CAP_SYS_ADMIN"); !strings.Contains(line, "absent, not required") {
		t.Errorf("doctor in the agent pod: CAP_SYS_ADMIN check %q, want absent, not required; output:\n%s", line, out)
	} else {
		t.Logf("doctor in the agent pod: exit 0; %s; %s", dsCheckLine(out, "uprobe_multi"), line)
	}

	// doctor in a pod without CAP_BPF (nor SYS_ADMIN, which implies it): it must fail and say how to fix it.
	dsCheckDoctorWithoutBPF(ctx, t, l)

	// Who may read the agent: the endpoints' answers to each caller.
	dsCheckEndpointAccess(ctx, t, l, port, ns)

	// kubectl kpath explain, as a kubectl plugin found on PATH: as the
	// admin (a bearer token), and as users with client certificates, one
	// bound to what explain needs, one without kpath-traces-reader.
	pathEnv := append(slices.Clone(kenv), "PATH="+plugins+string(os.PathListSeparator)+os.Getenv("PATH"))
	sre := []rbacv1.Subject{{Kind: "Group", Name: "kpath-e2e-sre"}}
	dev := []rbacv1.Subject{{Kind: "Group", Name: "kpath-e2e-dev"}}
	bind(ctx, t, l, "kpath-e2e-sre-traces", "kpath-traces-reader", sre...)
	for _, g := range [][]rbacv1.Subject{sre, dev} {
		bindIn(ctx, t, l, dsNamespace, g[0].Name+"-explain", "Role", "kpath-explain", g...)
		bindIn(ctx, t, l, ns, g[0].Name+"-view", "ClusterRole", "view", g...)
	}
	alice := userKubeconfig(t, l, "kpath-e2e-alice", "kpath-e2e-sre")
	bob := userKubeconfig(t, l, "kpath-e2e-bob", "kpath-e2e-dev")
	for _, who := range []struct{ name, kubeconfig string }{{"the admin", ""}, {"alice", alice}} {
		args := []string{"kpath", "explain", "pod/" + names[0], "-n", ns}
		if who.kubeconfig != "" {
			args = append(args, "--kubeconfig="+who.kubeconfig)
		}
		var out string
		var runErr error
		// RBAC reaches the authorizers through informers: retry a while.
		wctx, cancel := context.WithTimeout(ctx, 45*time.Second)
		err := waitFor(wctx, "kubectl kpath explain as "+who.name, func() (bool, error) {
			out, runErr = dsRun(t, root, pathEnv, kubectl, args...)
			return runErr == nil, nil
		})
		cancel()
		if err != nil {
			t.Errorf("kubectl kpath explain as %s: %v (%v)\n%s", who.name, err, runErr, out)
			continue
		}
		for _, want := range []string{"pod " + ns + "/" + names[0], "key=/registry/pods/" + ns + "/" + names[0], "apiserver/request", "◀ slowest"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl kpath explain as %s: no %q in:\n%s", who.name, want, out)
			}
		}
		if who.kubeconfig == "" {
			t.Logf("kubectl kpath explain pod/%s:\n%s", names[0], out)
		}
	}
	// Any object, by its type as kubectl reads it: a ConfigMap's write.
	if _, err := l.client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "ds-explained"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var cmOut string
	var cmErr error
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = waitFor(wctx, "explain cm/ds-explained", func() (bool, error) {
		cmOut, cmErr = dsRun(t, root, pathEnv, kubectl, "kpath", "explain", "cm/ds-explained", "-n", ns)
		return cmErr == nil, nil
	})
	cancel()
	if err != nil || !strings.Contains(cmOut, "configmaps "+ns+"/ds-explained: 1 trace(s)") || !strings.Contains(cmOut, "key=/registry/configmaps/"+ns+"/ds-explained") || !strings.Contains(cmOut, "etcd/apply") {
		t.Errorf("kubectl kpath explain cm/ds-explained: %v (%v)\n%s", err, cmErr, cmOut)
	}
	out, err = dsRun(t, root, pathEnv, kubectl, "kpath", "explain", "pod/"+names[0], "-n", ns, "--kubeconfig="+bob)
	if err == nil || !strings.Contains(out, `user "kpath-e2e-bob" may not get traces.kpath.dev`) {
		t.Errorf("explain as bob, without kpath-traces-reader: err %v, output:\n%s", err, out)
	}
	out, err = dsRun(t, root, pathEnv, kubectl, "kpath", "explain", "pod/"+names[0], "-n", ns, "--via=proxy")
	if err == nil || !strings.Contains(out, "pods/proxy passes on no caller's credentials: use --via=port-forward") {
		t.Errorf("explain --via=proxy of a guarded agent: err %v, output:\n%s", err, out)
	}
	out, err = dsRun(t, root, pathEnv, kubectl, "kpath", "explain", "pod/no-such-pod", "-n", ns)
	if err == nil || !strings.Contains(out, "no traces for pod "+ns+"/no-such-pod") {
		t.Errorf("explain of a pod without traces: err %v, output:\n%s", err, out)
	}
}

// dsAgentTracesPods waits for the agent pod a manifest made to be Ready
// and least-privileged, then starts dsPods pods and checks their traces
// arrive at rcv: each create's write chain and each Running pod's startup.
func dsAgentTracesPods(ctx context.Context, t *testing.T, l *lab, rcv *otlptest.Receiver, port string) (*corev1.Pod, string, []string) {
	t.Helper()
	agentPod := dsWaitAgentReady(ctx, t, l)
	t.Logf("agent pod %s Ready on node %s", agentPod.Name, agentPod.Spec.NodeName)
	dsCheckPodSpec(t, agentPod)
	dsCheckHostCaps(t, port)

	// /metrics on the node's loopback (hostNetwork): attached to kube-apiserver and etcd.
	a := &agent{metrics: "127.0.0.1:" + port, guarded: true, token: l.cfg.BearerToken}
	err := waitFor(ctx, "the agent attached to kube-apiserver and etcd", func() (bool, error) {
		m, err := a.scrape()
		return err == nil && m.sum("kpath_attached_probes", "component", "kube-apiserver") > 0 && m.sum("kpath_attached_probes", "component", "etcd") > 0, nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// 20 pods, and a trace of each pod's create.
	ns := makeNamespace(ctx, t, l, "kpath-e2e-ds-")
	names := make([]string, dsPods)
	uids := map[string]string{}
	for i := range names {
		names[i] = fmt.Sprintf("ds-%02d", i)
		p, err := l.client.CoreV1().Pods(ns).Create(ctx, dsWorkloadPod(names[i]), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		uids[names[i]] = string(p.UID)
	}
	// A trace's spans can reach the receiver in more than one export
	// batch: wait for each create trace whole, then hold what is not.
	var missing []string
	problems := map[string]error{}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	waitFor(wctx, "a whole create trace of every pod", func() (bool, error) {
		traces := groupTraces(rcv.Spans())
		missing = missing[:0]
		clear(problems)
		for _, n := range names {
			key := "/registry/pods/" + ns + "/" + n
			switch tr := dsCreateTrace(traces, key); {
			case tr == nil:
				missing = append(missing, n)
			default:
				if err := tr.checkWriteChain(key, 0); err != nil {
					problems[n] = err
				}
			}
		}
		return len(missing) == 0 && len(problems) == 0, nil
	})
	if len(missing) > 0 {
		t.Fatalf("no create trace for %d of %d pods: %v", len(missing), dsPods, missing)
	}
	for n, err := range problems {
		t.Errorf("pod %s: create trace: %v", n, err)
	}
	running := dsWaitPodsRunning(ctx, t, l, ns, names)
	t.Logf("%d of %d pods Running; %d spans received", running, dsPods, len(rcv.Spans()))
	dsCheckPodChain(ctx, t, rcv, names, uids, running)

	return agentPod, ns, names
}

// dsCheckLine is the line of doctor's check table for the named check.
func dsCheckLine(out, name string) string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return strings.Join(f, " ")
		}
	}
	return ""
}

func dsWaitAgentReady(ctx context.Context, t *testing.T, l *lab) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := waitFor(ctx, "the kpath-agent pod to be Ready", func() (bool, error) {
		ps, err := l.client.CoreV1().Pods(dsNamespace).List(ctx, metav1.ListOptions{LabelSelector: dsSelector})
		if err != nil || len(ps.Items) != 1 {
			return false, nil
		}
		p := &ps.Items[0]
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
				pod = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// checkPodSpec reads the pod back from the API server: not privileged,
// exactly the intended capabilities, read-only root, root user, host PID
// and network.
func dsCheckPodSpec(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if !p.Spec.HostPID || !p.Spec.HostNetwork {
		t.Errorf("hostPID %v hostNetwork %v, want both", p.Spec.HostPID, p.Spec.HostNetwork)
	}
	if len(p.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(p.Spec.Containers))
	}
	sc := p.Spec.Containers[0].SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no securityContext.capabilities")
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("the agent is privileged")
	}
	var add, drop []string
	for _, c := range sc.Capabilities.Add {
		add = append(add, string(c))
	}
	for _, c := range sc.Capabilities.Drop {
		drop = append(drop, string(c))
	}
	slices.Sort(add)
	if !slices.Equal(add, dsCaps) || !slices.Equal(drop, []string{"ALL"}) {
		t.Errorf("capabilities add %v drop %v, want add %v drop [ALL]", add, drop, dsCaps)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("root filesystem not read-only")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Error("not runAsUser 0")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation not false")
	}
}

// checkHostCaps finds the agent process on the host (by its metrics port)
// and checks what the kernel gave it.
func dsCheckHostCaps(t *testing.T, port string) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !bytes.Contains(cmd, []byte("--metrics-addr=0.0.0.0:"+port+"\x00")) {
			continue
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		fields := map[string]string{}
		for _, line := range strings.Split(string(st), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		eff, err := strconv.ParseUint(fields["CapEff"], 16, 64)
		if err != nil {
			t.Fatalf("pid %d CapEff %q", pid, fields["CapEff"])
		}
		t.Logf("agent pid %d on the host: CapEff %016x, CapBnd %s, NoNewPrivs %s, Seccomp %s",
			pid, eff, fields["CapBnd"], fields["NoNewPrivs"], fields["Seccomp"])
		if eff != dsCapEff {
			t.Errorf("agent CapEff %016x, want %016x (BPF PERFMON SYS_PTRACE)", eff, dsCapEff)
		}
		if fields["NoNewPrivs"] != "1" || fields["Seccomp"] != "2" {
			t.Errorf("NoNewPrivs %s Seccomp %s, want 1 and 2 (filter: RuntimeDefault)", fields["NoNewPrivs"], fields["Seccomp"])
		}
		return
	}
	t.Errorf("no kpath-agent process with --metrics-addr=0.0.0.0:%s on the host", port)
}

func dsWorkloadPod(name string) *corev1.Pod {
	no, grace := false, int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "kpath-e2e-ds"}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  &no,
			TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{Name: "web", Image: "kpath.local/workload:v1", ImagePullPolicy: corev1.PullNever,
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m")}}}},
		},
	}
}

// createTrace is the trace of the POST that created the object under key.
func dsCreateTrace(traces map[string]*trace, key string) *trace {
	for _, tr := range traces {
		r := tr.root()
		if r == nil {
			continue
		}
		a := attrs(r)
		// The create's POST is to the collection; the binding's is a POST too.
		if path, _ := a["url.path"].(string); a["kpath.key"] == key && a["kpath.stage"] == "request" && a["http.request.method"] == "POST" &&
			!strings.Contains(path, "/pods/") {
			return tr
		}
	}
	return nil
}

func dsWaitPodsRunning(ctx context.Context, t *testing.T, l *lab, ns string, names []string) int {
	t.Helper()
	running := 0
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := waitFor(wctx, "the pods to run", func() (bool, error) {
		ps, err := l.client.CoreV1().Pods(ns).List(wctx, metav1.ListOptions{LabelSelector: "app=kpath-e2e-ds"})
		if err != nil {
			return false, nil
		}
		running = 0
		for _, p := range ps.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == len(names), nil
	})
	if err != nil {
		t.Logf("%v (%d of %d Running); the write traces are checked regardless", err, running, len(names))
	}
	return running
}

// dsCheckPodChain requires, for every pod that reached Running, its whole
// startup trace from this DaemonSet's agent: complete, with every stage of
// the partition in causal order adding up to the startup
// (pods_test.go's podTrace checks).
func dsCheckPodChain(ctx context.Context, t *testing.T, rcv *otlptest.Receiver, names []string, uids map[string]string, running int) {
	t.Helper()
	var pods []*corev1.Pod
	for _, n := range names {
		pods = append(pods, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: n, UID: types.UID(uids[n])}})
	}
	// A pod's trace is exported once its status write is committed, a
	// little after it shows Running: give the last ones a moment.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var found, complete int
	var stagesSeen map[string]bool
	waitFor(wctx, "pod startup traces", func() (bool, error) {
		found, complete, stagesSeen = dsPodChains(groupTraces(rcv.Spans()), names, uids)
		return complete >= running, nil
	})
	var ss []string
	for s := range stagesSeen {
		ss = append(ss, s)
	}
	slices.Sort(ss)
	t.Logf("pod chain: %d of %d pods have a startup trace, %d complete; stages seen: %s",
		found, len(names), complete, strings.Join(ss, " "))
	if complete < running {
		t.Errorf("%d of %d Running pods have a complete startup trace", complete, running)
		// What arrived of the pods without one: which join failed.
		traces := groupTraces(rcv.Spans())
		for _, n := range names {
			id := correlate.PodTraceID(uids[n])
			if tr := traces[fmt.Sprintf("%x", id[:])]; tr != nil && tr.root() != nil && attrs(tr.root())["kpath.complete"] == true {
				continue
			}
			for _, tr := range traces {
				for _, sp := range tr.spans {
					if attrs(sp)["k8s.pod.name"] == n {
						t.Logf("pod %s without a complete startup trace: trace %s has %q stage %v probe %v missing %v",
							n, tr.id, sp.Name, attrs(sp)["kpath.stage"], attrs(sp)["kpath.probe"], attrs(sp)["kpath.missing"])
					}
				}
			}
		}
	}
	l := &lab{}
	for uid, pt := range l.podTraces(rcv, pods) {
		if !pt.complete() {
			continue
		}
		if err := pt.checkShape(); err != nil {
			t.Errorf("pod uid %s: %v", uid, err)
		}
		if err := pt.checkPartition(); err != nil {
			t.Errorf("pod uid %s: %v", uid, err)
		}
	}
}

func dsPodChains(traces map[string]*trace, names []string, uids map[string]string) (found, complete int, stagesSeen map[string]bool) {
	stagesSeen = map[string]bool{}
	for _, n := range names {
		id := correlate.PodTraceID(uids[n])
		tr, ok := traces[fmt.Sprintf("%x", id[:])]
		if !ok {
			continue
		}
		found++
		parts := 0
		for _, s := range tr.spans {
			a := attrs(s)
			if a["kpath.partition"] == true {
				parts++
				stagesSeen[fmt.Sprint(a["kpath.stage"])] = true
			}
		}
		if r := tr.root(); r != nil && attrs(r)["kpath.complete"] == true && parts == len(correlate.PodStages) {
			complete++
		}
	}
	return found, complete, stagesSeen
}

// checkDoctorWithoutBPF runs `kpath-agent doctor` in a pod like the agent's
// but without CAP_BPF and CAP_SYS_ADMIN: it must exit non-zero and name the fix.
func dsCheckDoctorWithoutBPF(ctx context.Context, t *testing.T, l *lab) {
	t.Helper()
	no, yes, root := false, true, int64(0)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "kpath-doctor-no-bpf", Labels: map[string]string{"app.kubernetes.io/part-of": "kpath"}},
		Spec: corev1.PodSpec{
			HostPID:                      true,
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{
				Name: "doctor", Image: "kpath.local/kpath-agent:dev", ImagePullPolicy: corev1.PullNever,
				Command:   []string{"/usr/local/bin/kpath-agent", "doctor"},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")}},
				SecurityContext: &corev1.SecurityContext{
					Privileged: &no, AllowPrivilegeEscalation: &no, RunAsUser: &root, ReadOnlyRootFilesystem: &yes,
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"PERFMON", "SYS_PTRACE"}},
				},
			}},
		},
	}
	pods := l.client.CoreV1().Pods(dsNamespace)
	if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Errorf("doctor pod: %v", err)
		return
	}
	defer pods.Delete(context.Background(), pod.Name, metav1.DeleteOptions{})
	var exit int32 = -1
	err := waitFor(ctx, "the doctor pod to finish", func() (bool, error) {
		p, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Terminated != nil {
				exit = cs.State.Terminated.ExitCode
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Error(err)
		return
	}
	rc, err := pods.GetLogs(pod.Name, &corev1.PodLogOptions{}).Stream(ctx)
	if err != nil {
		t.Errorf("doctor pod logs: %v", err)
		return
	}
	logs, _ := io.ReadAll(rc)
	rc.Close()
	const fix = "FIX: CAP_BPF missing (load the BPF program and its maps): add it to securityContext.capabilities.add"
	if exit == 0 || !strings.Contains(string(logs), fix) || strings.Contains(string(logs), "FIX: CAP_SYS_ADMIN") {
		t.Errorf("doctor without CAP_BPF: exit %d, want non-zero and %q; output:\n%s", exit, fix, logs)
		return
	}
	t.Logf("doctor without CAP_BPF: exit %d, says %q", exit, fix)
}
