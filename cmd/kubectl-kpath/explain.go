package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/kpath/kpath/correlate"
	"github.com/kpath/kpath/export"
)

// tracesPath is where every agent serves its recent traces (export.Recent).
const tracesPath = "/api/v1/traces"

// defaultMetricsPort is the agent's metrics port when its pod spec names none.
const defaultMetricsPort = 9464

// fetcher asks one agent pod for GET path?query on its metrics port.
type fetcher interface {
	get(ctx context.Context, pod *corev1.Pod, port int, path string, query url.Values) ([]byte, error)
	describe() string
}

type proxyFetcher struct{ cs kubernetes.Interface }

func (f proxyFetcher) describe() string { return "the API server's pods/proxy" }

func (f proxyFetcher) get(ctx context.Context, pod *corev1.Pod, port int, path string, query url.Values) ([]byte, error) {
	params := map[string]string{}
	for k, v := range query {
		params[k] = v[0]
	}
	body, err := f.cs.CoreV1().Pods(pod.Namespace).ProxyGet("", pod.Name, strconv.Itoa(port), path, params).DoRaw(ctx)
	if err != nil && strings.Contains(string(body)+err.Error(), httpsServerSays) {
		return nil, fmt.Errorf("pods/proxy: agent %s serves its endpoints over HTTPS to callers it authenticates (--metrics-auth=kubernetes), and pods/proxy passes on no caller's credentials: use --via=port-forward", pod.Name)
	}
	return body, proxyError(err)
}

// httpsServerSays is Go's answer to plain HTTP on a TLS listener.
const httpsServerSays = "Client sent an HTTP request to an HTTPS server"

// proxyError adds what the API server said (e.g. "error trying to reach
// service: dial tcp ...") to client-go's generic status text.
func proxyError(err error) error {
	var st apierrors.APIStatus
	if err == nil || !errors.As(err, &st) {
		return err
	}
	s := st.Status()
	var why []string
	if s.Details != nil {
		for _, c := range s.Details.Causes {
			if m := strings.TrimSpace(c.Message); m != "" && !strings.Contains(s.Message, m) {
				why = append(why, m)
			}
		}
	}
	if len(why) == 0 {
		return fmt.Errorf("pods/proxy: %w", err)
	}
	return fmt.Errorf("pods/proxy: %w: %s", err, strings.Join(why, "; "))
}

type explainer struct {
	cs     kubernetes.Interface
	fetch  fetcher
	store  *traceStore // nil: ask the agents only
	opts   options
	out    io.Writer
	errOut io.Writer
}

// answer is what one agent said.
type answer struct {
	agent string // pod name
	node  string
	resp  export.TracesResponse
	err   error
}

func (e *explainer) explain(ctx context.Context, ns, name string) error {
	query := url.Values{"namespace": {ns}, "pod": {name}}
	uid := ""
	pod, err := e.cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		uid = string(pod.UID)
		query.Set("uid", uid)
	case apierrors.IsNotFound(err):
		fmt.Fprintf(e.errOut, "note: pod %s/%s does not exist (any more); looking for its traces by name\n", ns, name)
	default:
		fmt.Fprintf(e.errOut, "note: cannot read pod %s/%s (%v); looking for its traces by name\n", ns, name, err)
	}
	if e.opts.limit > 0 {
		query.Set("limit", strconv.Itoa(e.opts.limit))
	}
	if e.store != nil {
		if uid == "" {
			fmt.Fprintf(e.errOut, "note: without the pod's UID its trace ID is unknown: asking the agents instead of %s\n", e.store.base)
		} else if done, err := e.fromStore(ctx, ns, name, uid); err != nil {
			fmt.Fprintf(e.errOut, "note: %v; asking the agents\n", err)
		} else if done {
			return nil
		}
	}

	who := fmt.Sprintf("pod %s/%s", ns, name)
	if uid != "" {
		who += " (uid " + uid + ")"
	}
	return e.askAndPrint(ctx, query, who)
}

// explainObject prints the traces the agents hold about any other object:
// its writes, with what they led to (an operator's reconciles of it, a
// webhook server's handling), by its resource and name.
func (e *explainer) explainObject(ctx context.Context, resource, ns, name string) error {
	gvr, namespaced, err := resolveResource(e.cs, resource)
	if err != nil {
		return err
	}
	query := url.Values{"resource": {gvr.Resource}, "name": {name}}
	if gvr.Group != "" {
		query.Set("group", gvr.Group)
	}
	who := gvr.GroupResource().String() + " " + name
	if namespaced {
		query.Set("namespace", ns)
		who = gvr.GroupResource().String() + " " + ns + "/" + name
	}
	if e.opts.limit > 0 {
		query.Set("limit", strconv.Itoa(e.opts.limit))
	}
	return e.askAndPrint(ctx, query, who)
}

// askAndPrint asks every agent for query's traces, merges them and prints
// their waterfalls under who.
func (e *explainer) askAndPrint(ctx context.Context, query url.Values, who string) error {
	agents, err := e.cs.CoreV1().Pods(e.opts.agentNamespace).List(ctx, metav1.ListOptions{LabelSelector: e.opts.agentSelector})
	if err != nil {
		return fmt.Errorf("list kpath agents in namespace %s: %w", e.opts.agentNamespace, err)
	}
	if len(agents.Items) == 0 {
		return fmt.Errorf("no kpath agent pods in namespace %s (selector %s): is kpath installed? (kubectl apply -k deploy/daemonset; docs/install.md)",
			e.opts.agentNamespace, e.opts.agentSelector)
	}

	answers := e.ask(ctx, agents.Items, query)
	var ok []answer
	for _, a := range answers {
		if a.err != nil {
			fmt.Fprintf(e.errOut, "agent %s (node %s) did not answer: %v; continuing with the others\n", a.agent, a.node, a.err)
			continue
		}
		ok = append(ok, a)
	}
	if len(ok) == 0 {
		return fmt.Errorf("none of the %d kpath agents answered through %s", len(answers), e.fetch.describe())
	}
	traces, err := merge(ok)
	if err != nil {
		return err
	}
	if len(traces) == 0 {
		return fmt.Errorf("no traces for %s on %d agent(s) (each keeps its last %d traces or %s; traced components run on the nodes of %s)",
			who, len(ok), export.DefaultRecentTraces, export.DefaultRecentAge, agentNodes(ok))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s: %d trace(s) from %d of %d agent(s)\n\n", who, len(traces), len(ok), len(answers))
	for _, t := range traces {
		export.Waterfall(&b, t.Trace)
		if len(t.nodes) > 1 {
			fmt.Fprintf(&b, "    (merged from nodes %s)\n", strings.Join(t.nodes, ", "))
		}
		b.WriteByte('\n')
	}
	_, err = e.out.Write(b.Bytes())
	return err
}

// fromStore prints the pod's startup trace from the trace store; done is
// false when the store does not hold it.
func (e *explainer) fromStore(ctx context.Context, ns, name, uid string) (done bool, err error) {
	id := correlate.PodTraceID(uid)
	t, found, err := e.store.get(ctx, id)
	if err != nil {
		return false, err
	}
	if !found {
		fmt.Fprintf(e.errOut, "note: trace %x of pod %s/%s is not in %s (not exported yet, or aged out): asking the agents\n", id[:], ns, name, e.store.base)
		return false, nil
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "pod %s/%s (uid %s): its startup trace from %s\n\n", ns, name, uid, e.store.base)
	export.Waterfall(&b, t)
	b.WriteByte('\n')
	_, err = e.out.Write(b.Bytes())
	return true, err
}

func agentNodes(as []answer) string {
	var ns []string
	for _, a := range as {
		ns = append(ns, a.node)
	}
	sort.Strings(ns)
	return strings.Join(slices.Compact(ns), ", ")
}

// ask queries every agent at once, each bounded by --timeout; the answers
// come back in the order of agents.
func (e *explainer) ask(ctx context.Context, agents []corev1.Pod, query url.Values) []answer {
	out := make([]answer, len(agents))
	var wg sync.WaitGroup
	for i := range agents {
		p := &agents[i]
		out[i] = answer{agent: p.Name, node: p.Spec.NodeName}
		if p.Status.Phase != corev1.PodRunning {
			out[i].err = fmt.Errorf("pod is %s, not Running", p.Status.Phase)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, e.opts.timeout)
			defer cancel()
			body, err := e.fetch.get(cctx, p, metricsPort(p), tracesPath, query)
			if err != nil {
				out[i].err = err
				return
			}
			dec := json.NewDecoder(bytes.NewReader(body))
			dec.UseNumber() // int64 attributes (revisions) stay exact
			if err := dec.Decode(&out[i].resp); err != nil {
				out[i].err = fmt.Errorf("answer is not a kpath traces response: %w (%.80q)", err, body)
			}
		}()
	}
	wg.Wait()
	return out
}

// resolveResource reads a resource type as kubectl does (deploy,
// deployments.apps, widget, widgets.v1.kpath.dev) against the cluster's
// discovery, and says whether its objects live in namespaces.
func resolveResource(cs kubernetes.Interface, arg string) (schema.GroupVersionResource, bool, error) {
	dc := memory.NewMemCacheClient(cs.Discovery())
	m := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(dc), dc, nil)
	full, gr := schema.ParseResourceArg(strings.ToLower(arg))
	var (
		gvr schema.GroupVersionResource
		err = errors.New("no version given")
	)
	if full != nil {
		gvr, err = m.ResourceFor(*full)
	}
	if err != nil {
		if gvr, err = m.ResourceFor(gr.WithVersion("")); err != nil {
			return gvr, false, fmt.Errorf("%q is not a resource type this cluster serves: %w", arg, err)
		}
	}
	gvk, err := m.KindFor(gvr)
	if err != nil {
		return gvr, false, fmt.Errorf("resource %s: %w", gvr.GroupResource(), err)
	}
	mapping, err := m.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return gvr, false, fmt.Errorf("resource %s: %w", gvr.GroupResource(), err)
	}
	return gvr, mapping.Scope.Name() == meta.RESTScopeNameNamespace, nil
}

// metricsPort is the container port named "metrics" of the agent pod.
func metricsPort(p *corev1.Pod) int {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == "metrics" {
				return int(port.ContainerPort)
			}
		}
	}
	return defaultMetricsPort
}

// mergedTrace is one trace put together from what every agent saw.
type mergedTrace struct {
	correlate.Trace
	nodes []string
}

// merge joins the agents' answers by trace ID: spans are deduplicated by
// span ID (agents on nodes that both ran a piece of the chain report the
// spans they saw), a trace is complete when any agent saw it complete.
// Traces come out by start time.
func merge(answers []answer) ([]mergedTrace, error) {
	type acc struct {
		t     correlate.Trace
		spans map[correlate.SpanID]bool
		nodes map[string]bool
	}
	byID := map[correlate.TraceID]*acc{}
	for _, a := range answers {
		for _, rt := range a.resp.Traces {
			t, err := rt.Trace()
			if err != nil {
				return nil, fmt.Errorf("agent %s: trace %s: %w", a.agent, rt.TraceID, err)
			}
			m := byID[t.ID]
			if m == nil {
				m = &acc{t: correlate.Trace{ID: t.ID}, spans: map[correlate.SpanID]bool{}, nodes: map[string]bool{}}
				byID[t.ID] = m
			}
			m.t.Complete = m.t.Complete || t.Complete
			node := a.resp.Node
			if node == "" {
				node = a.node
			}
			m.nodes[node] = true
			for _, s := range t.Spans {
				if !m.spans[s.SpanID] {
					m.spans[s.SpanID] = true
					m.t.Spans = append(m.t.Spans, s)
				}
			}
		}
	}
	out := make([]mergedTrace, 0, len(byID))
	for _, m := range byID {
		slices.SortStableFunc(m.t.Spans, func(a, b correlate.Span) int { return a.Start.Compare(b.Start) })
		var nodes []string
		for n := range m.nodes {
			if n != "" {
				nodes = append(nodes, n)
			}
		}
		sort.Strings(nodes)
		out = append(out, mergedTrace{Trace: m.t, nodes: nodes})
	}
	slices.SortFunc(out, func(a, b mergedTrace) int {
		if c := start(a.Trace).Compare(start(b.Trace)); c != 0 {
			return c
		}
		return slices.Compare(a.ID[:], b.ID[:])
	})
	return out, nil
}

func start(t correlate.Trace) time.Time {
	var s time.Time
	for _, sp := range t.Spans {
		if s.IsZero() || sp.Start.Before(s) {
			s = sp.Start
		}
	}
	return s
}
