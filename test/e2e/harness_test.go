// Package e2e runs kpath-agent against the local lab cluster (make lab-up)
// and checks the traces it exports over OTLP. It runs when KPATH_E2E=1, as
// `make test` sets it; elsewhere it skips and says why.
package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kpath/kpath/export/otlptest"
)

var agentBin string

func TestMain(m *testing.M) {
	if os.Getenv("KPATH_E2E") == "1" {
		dir, err := os.MkdirTemp("", "kpath-e2e")
		if err != nil {
			panic(err)
		}
		agentBin = filepath.Join(dir, "kpath-agent")
		out, err := exec.Command("go", "build", "-o", agentBin, "../../cmd/agent").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build kpath-agent: %v\n%s", err, out)
			os.Exit(1)
		}
		code := m.Run()
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

type lab struct {
	dir     string
	flavour string
	client  *kubernetes.Clientset
	cfg     *rest.Config // the admin's: a bearer token
}

// session is how most e2e tests begin: the lab, a deadline, a real OTLP
// receiver, an agent exporting to it and a namespace of their own.
type session struct {
	l   *lab
	ctx context.Context
	rcv *otlptest.Receiver
	a   *agent
	ns  string
}

// begin starts a session that ends with the test; agentFlags go to the agent.
func begin(t *testing.T, timeout time.Duration, nsPrefix string, agentFlags ...string) *session {
	t.Helper()
	l := needLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	rcv := otlptest.Start(t)
	a := startAgent(t, rcv.Addr(), agentFlags...)
	return &session{l: l, ctx: ctx, rcv: rcv, a: a, ns: makeNamespace(ctx, t, l, nsPrefix)}
}

// counterLag is how far the counters the agent serves may lag what
// happened: it copies the hit counters out of BPF every 2 s.
const counterLag = 2500 * time.Millisecond

// quietCounters waits until the lab is quiet (pods of earlier tests gone,
// whose kubelet syncs would add to this one's hits), then for the counters
// to catch up, and scrapes them: the "before" of a hit count.
func (se *session) quietCounters(t *testing.T) metrics {
	t.Helper()
	waitQuiet(se.ctx, t, se.l)
	return se.settledCounters(t)
}

// settledCounters scrapes the agent once its counters caught up with what
// happened until now.
func (se *session) settledCounters(t *testing.T) metrics {
	t.Helper()
	time.Sleep(counterLag)
	m, err := se.a.scrape()
	if err != nil {
		t.Fatalf("scrape the agent's counters: %v", err)
	}
	return m
}

// needLab returns the running lab, skips when KPATH_E2E is not 1, and fails
// when it is but the lab is down: CI must never pass by skipping.
func needLab(t *testing.T) *lab {
	t.Helper()
	if os.Getenv("KPATH_E2E") != "1" {
		t.Skip("skipped: end-to-end tests run with KPATH_E2E=1 against the lab (make test does both)")
	}
	if os.Geteuid() != 0 {
		t.Fatal("KPATH_E2E=1 needs root: the agent loads BPF programs")
	}
	dir := labDir()
	kc := filepath.Join(dir, "admin.kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatalf("lab kubeconfig %s: %v (is the lab up? make lab-up)", kc, err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := &lab{dir: dir, client: cs, cfg: cfg, flavour: "normal"}
	if env, err := os.ReadFile(filepath.Join(dir, "env")); err == nil {
		for _, line := range strings.Split(string(env), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimPrefix(line, "export "), "KPATH_LAB_FLAVOUR="); ok {
				l.flavour = strings.Trim(v, `"'`)
			}
		}
	}
	t.Logf("lab %s, flavour %s", dir, l.flavour)
	return l
}

func labDir() string {
	if dir := os.Getenv("KPATH_LAB_DIR"); dir != "" {
		return dir
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "kpath", "lab")
}

type agent struct {
	cmd     *exec.Cmd
	metrics string
	logPath string
	// guarded: the agent serves HTTPS to callers it authenticates
	// (--metrics-auth=kubernetes), and token is the bearer token sent.
	guarded bool
	token   string
}

// get asks the agent for path as the test's caller.
func (a *agent) get(path string) (*http.Response, error) {
	if !a.guarded {
		return http.Get("http://" + a.metrics + path)
	}
	req, err := http.NewRequest(http.MethodGet, "https://"+a.metrics+path, nil)
	if err != nil {
		return nil, err
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	return insecureTLS.Do(req)
}

// insecureTLS takes the agent's self-signed serving certificate.
var insecureTLS = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startAgent runs kpath-agent exporting to otlpAddr and waits until it is
// attached to every lab component that has default rows.
func startAgent(t *testing.T, otlpAddr string, extra ...string) *agent {
	t.Helper()
	return startAgentFor(t, []string{"kube-apiserver", "etcd", "kube-scheduler", "kubelet"}, otlpAddr, extra...)
}

// startAgentFor runs kpath-agent as startAgent does, waiting until it is
// attached to each of comps (an agent of a node without a control plane
// has only a kubelet).
func startAgentFor(t *testing.T, comps []string, otlpAddr string, extra ...string) *agent {
	t.Helper()
	a := &agent{metrics: freeAddr(t), logPath: filepath.Join(t.TempDir(), "agent.log")}
	for _, f := range extra {
		if v, ok := strings.CutPrefix(f, "--metrics-addr="); ok {
			a.metrics = v // the flag given last wins
		}
	}
	logf, err := os.Create(a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--export=otlp", "--otlp-endpoint=" + otlpAddr, "--metrics-addr=" + a.metrics, "--log-format=json", "--scan-interval=500ms",
		"--kubeconfig=" + filepath.Join(labDir(), "admin.kubeconfig")}, extra...)
	a.cmd = exec.Command(agentBin, args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { a.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			a.cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(a.logPath)
			t.Logf("agent log:\n%s", b)
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		m, err := a.scrape()
		all := err == nil
		for _, c := range comps {
			all = all && m.sum("kpath_attached_probes", "component", c) > 0
		}
		if all {
			return a
		}
		time.Sleep(200 * time.Millisecond)
	}
	b, _ := os.ReadFile(a.logPath)
	t.Fatalf("agent did not attach to %s within 60s; log:\n%s", strings.Join(comps, ", "), b)
	return nil
}

// metrics is a scrape: one entry per sample line.
type metrics []sample

type sample struct {
	name   string
	labels map[string]string
	value  float64
}

func (a *agent) scrape() (metrics, error) {
	resp, err := a.get("/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var m metrics
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexByte(line, '{'); i >= 0 {
			s.name = line[:i]
			j := strings.LastIndexByte(line, '}')
			for _, kv := range splitLabels(line[i+1 : j]) {
				k, v, _ := strings.Cut(kv, "=")
				s.labels[k] = strings.Trim(v, `"`)
			}
			rest = strings.TrimSpace(line[j+1:])
		} else {
			f := strings.Fields(line)
			s.name, rest = f[0], f[1]
		}
		s.value, _ = strconv.ParseFloat(strings.Fields(rest)[0], 64)
		m = append(m, s)
	}
	return m, sc.Err()
}

func splitLabels(s string) []string {
	var out []string
	inq, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			inq = !inq
		case ',':
			if !inq {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

// sum adds the samples of name whose labels match the given pairs.
func (m metrics) sum(name string, kv ...string) float64 {
	var total float64
next:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if s.labels[kv[i]] != kv[i+1] {
				continue next
			}
		}
		total += s.value
	}
	return total
}

// trace is one received trace, its spans by ID.
type trace struct {
	id    string
	spans []*tracepb.Span
}

func attrs(s *tracepb.Span) map[string]any {
	m := map[string]any{}
	for _, kv := range s.Attributes {
		m[kv.Key] = value(kv.Value)
	}
	return m
}

func value(v *commonpb.AnyValue) any {
	switch x := v.Value.(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	}
	return nil
}

func groupTraces(spans []*tracepb.Span) map[string]*trace {
	out := map[string]*trace{}
	for _, s := range spans {
		id := fmt.Sprintf("%x", s.TraceId)
		tr := out[id]
		if tr == nil {
			tr = &trace{id: id}
			out[id] = tr
		}
		tr.spans = append(tr.spans, s)
	}
	return out
}

func (tr *trace) root() *tracepb.Span {
	for _, s := range tr.spans {
		if len(s.ParentSpanId) == 0 {
			return s
		}
	}
	return nil
}

func (tr *trace) stage(stage string) []*tracepb.Span {
	var out []*tracepb.Span
	for _, s := range tr.spans {
		if attrs(s)["kpath.stage"] == stage {
			out = append(out, s)
		}
	}
	return out
}

// checkWriteChain reports what is wrong with a write's trace: its tree, and
// one request, storage-write, etcd-request and apply span, each with etcd
// key key and one revision (want, when it is not 0), the etcd request's from
// etcd.
func (tr *trace) checkWriteChain(key string, want int64) error {
	if err := tr.checkShape(); err != nil {
		return err
	}
	var rev any
	for _, stage := range []string{"request", "storage-write", "etcd-request", "apply"} {
		ss := tr.stage(stage)
		if len(ss) != 1 {
			return fmt.Errorf("%d %s spans, want 1", len(ss), stage)
		}
		a := attrs(ss[0])
		if a["kpath.key"] != key {
			return fmt.Errorf("%s span key %v, want %s", stage, a["kpath.key"], key)
		}
		if rev == nil {
			rev = a["kpath.revision"]
		}
		if a["kpath.revision"] != rev || rev == nil || (want != 0 && rev != want) {
			return fmt.Errorf("%s span revision %v, want %v (resourceVersion %d)", stage, a["kpath.revision"], rev, want)
		}
	}
	if c := attrs(tr.stage("etcd-request")[0])["kpath.component"]; c != "etcd" {
		return fmt.Errorf("etcd-request span from %v", c)
	}
	return nil
}

// checkShape reports what is wrong with a trace's tree: one root, parents
// present, children inside parents.
// dump lists the spans of tr, one a line, for a failure's log: what a
// wrong join put where.
func (tr *trace) dump() string {
	var b strings.Builder
	for _, s := range tr.spans {
		a := attrs(s)
		fmt.Fprintf(&b, "  %x parent %x [%d,%d] %q stage %v probe %v rev %v write %v\n", s.SpanId, s.ParentSpanId,
			s.StartTimeUnixNano, s.EndTimeUnixNano, s.Name, a["kpath.stage"], a["kpath.probe"], a["kpath.revision"], a["kpath.write_trace"])
	}
	return b.String()
}

func (tr *trace) checkShape() error {
	byID := map[string]*tracepb.Span{}
	for _, s := range tr.spans {
		byID[string(s.SpanId)] = s
	}
	roots := 0
	for _, s := range tr.spans {
		if s.EndTimeUnixNano < s.StartTimeUnixNano {
			return fmt.Errorf("span %q has a negative duration", s.Name)
		}
		if len(s.ParentSpanId) == 0 {
			roots++
			continue
		}
		p, ok := byID[string(s.ParentSpanId)]
		if !ok {
			return fmt.Errorf("span %q: parent missing", s.Name)
		}
		if s.StartTimeUnixNano < p.StartTimeUnixNano || s.EndTimeUnixNano > p.EndTimeUnixNano {
			return fmt.Errorf("span %q [%d,%d] not inside its parent %q [%d,%d]", s.Name, s.StartTimeUnixNano, s.EndTimeUnixNano, p.Name, p.StartTimeUnixNano, p.EndTimeUnixNano)
		}
	}
	if roots != 1 {
		return fmt.Errorf("%d roots", roots)
	}
	return nil
}

func waitFor(ctx context.Context, what string, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out waiting for %s", what)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
