package e2e

// The lab's trace store: kpath's OTLP as a real Jaeger v2 stores it and its
// query API returns it, with the control plane's components as services.

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kpath/kpath/correlate"
)

// jaegerTrace is what Jaeger's /api/v3/traces/{id} returns: OTLP/JSON,
// IDs in hex, times in decimal strings.
type jaegerTrace struct {
	Result struct {
		ResourceSpans []struct {
			Resource struct {
				Attributes []jaegerKV `json:"attributes"`
			} `json:"resource"`
			ScopeSpans []struct {
				Spans []struct {
					TraceID      string     `json:"traceId"`
					SpanID       string     `json:"spanId"`
					ParentSpanID string     `json:"parentSpanId"`
					Name         string     `json:"name"`
					Start        string     `json:"startTimeUnixNano"`
					End          string     `json:"endTimeUnixNano"`
					Attributes   []jaegerKV `json:"attributes"`
				} `json:"spans"`
			} `json:"scopeSpans"`
		} `json:"resourceSpans"`
	} `json:"result"`
}

type jaegerKV struct {
	Key   string `json:"key"`
	Value struct {
		StringValue *string `json:"stringValue"`
		IntValue    *string `json:"intValue"` // int64 is a string in OTLP/JSON
		BoolValue   *bool   `json:"boolValue"`
	} `json:"value"`
}

func (kv jaegerKV) proto() *commonpb.KeyValue {
	v := &commonpb.AnyValue{}
	switch {
	case kv.Value.StringValue != nil:
		v.Value = &commonpb.AnyValue_StringValue{StringValue: *kv.Value.StringValue}
	case kv.Value.IntValue != nil:
		n, _ := strconv.ParseInt(*kv.Value.IntValue, 10, 64)
		v.Value = &commonpb.AnyValue_IntValue{IntValue: n}
	case kv.Value.BoolValue != nil:
		v.Value = &commonpb.AnyValue_BoolValue{BoolValue: *kv.Value.BoolValue}
	}
	return &commonpb.KeyValue{Key: kv.Key, Value: v}
}

// jaegerID decodes an ID as Jaeger writes it: hex, as OTLP/JSON says, or
// base64, as protobuf's JSON mapping of bytes would.
func jaegerID(s string) []byte {
	if b, err := hex.DecodeString(s); err == nil {
		return b
	}
	b, _ := base64.StdEncoding.DecodeString(s)
	return b
}

// jaegerGet fetches one trace from Jaeger's query API: its spans, and the
// service.name of the resource each span came under.
func jaegerGet(ctx context.Context, query string, id correlate.TraceID) (*trace, map[string]string, error) {
	tr, resources, err := jaegerGetResources(ctx, query, id)
	serviceOf := map[string]string{}
	for span, res := range resources {
		serviceOf[span] = res["service.name"]
	}
	return tr, serviceOf, err
}

// jaegerGetResources fetches one trace as jaegerGet does, with the string
// attributes of the resource each span came under (service.name,
// k8s.node.name: which agent sent it).
func jaegerGetResources(ctx context.Context, query string, id correlate.TraceID) (*trace, map[string]map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/api/v3/traces/%x", query, id[:]), nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusNotFound {
		return nil, nil, nil
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("GET %s: %s: %.200s", req.URL, resp.Status, body)
	}
	var jt jaegerTrace
	if err := json.Unmarshal(body, &jt); err != nil {
		return nil, nil, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	tr := &trace{id: fmt.Sprintf("%x", id[:])}
	resourceOf := map[string]map[string]string{} // span ID -> its resource
	for _, rs := range jt.Result.ResourceSpans {
		res := map[string]string{}
		for _, kv := range rs.Resource.Attributes {
			if kv.Value.StringValue != nil {
				res[kv.Key] = *kv.Value.StringValue
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				start, _ := strconv.ParseUint(s.Start, 10, 64)
				end, _ := strconv.ParseUint(s.End, 10, 64)
				sp := &tracepb.Span{TraceId: jaegerID(s.TraceID), SpanId: jaegerID(s.SpanID), ParentSpanId: jaegerID(s.ParentSpanID),
					Name: s.Name, StartTimeUnixNano: start, EndTimeUnixNano: end}
				for _, kv := range s.Attributes {
					sp.Attributes = append(sp.Attributes, kv.proto())
				}
				tr.spans = append(tr.spans, sp)
				resourceOf[string(sp.SpanId)] = res
			}
		}
	}
	return tr, resourceOf, nil
}

// needJaeger returns the lab's trace store: its query API and its OTLP
// address; it skips, saying why, when the lab runs without one.
func needJaeger(t *testing.T, l *lab) (query, otlp string) {
	t.Helper()
	query, otlp = l.env("KPATH_LAB_JAEGER_QUERY"), l.env("KPATH_LAB_JAEGER_OTLP")
	if query == "" || otlp == "" {
		t.Skip("skipped: the lab runs without its trace store (KPATH_LAB_JAEGER=off)")
	}
	return query, otlp
}

func TestTracesArriveInJaeger(t *testing.T) {
	l := needLab(t)
	query, otlp := needJaeger(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	startAgent(t, otlp)
	ns := makeNamespace(ctx, t, l, "kpath-e2e-jaeger-")
	waitQuiet(ctx, t, l)

	const n = 3
	for i := range n {
		if _, err := l.client.CoreV1().Pods(ns).Create(ctx, runningPod(fmt.Sprintf("j-%d", i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods, err := waitRunning(ctx, l, ns, n)
	if err != nil {
		t.Fatal(err)
	}

	// Each pod's trace, as Jaeger returns it, is whole: the partition, one
	// root, every parent there, children inside parents, and each span
	// under the service of the component it describes.
	want := []string{"etcd", "kube-apiserver", "kube-scheduler", "kubelet"}
	for _, p := range pods {
		id := correlate.PodTraceID(string(p.UID))
		var tr *trace
		var serviceOf map[string]string
		var problem error
		err := waitFor(ctx, "pod "+p.Name+"'s whole trace in Jaeger", func() (bool, error) {
			var err error
			if tr, serviceOf, err = jaegerGet(ctx, query, id); err != nil || tr == nil {
				problem = err
				return false, nil
			}
			pt := &podTrace{trace: tr, stages: map[string]*tracepb.Span{}}
			for _, s := range tr.spans {
				if attrs(s)["kpath.partition"] == true {
					pt.stages[attrs(s)["kpath.stage"].(string)] = s
				}
			}
			if !pt.complete() {
				problem = fmt.Errorf("partition incomplete: %v", pt.durations())
				return false, nil
			}
			if problem = tr.checkShape(); problem == nil {
				problem = pt.checkPartition()
			}
			return problem == nil, nil
		})
		if err != nil {
			if tr != nil {
				t.Logf("pod %s's trace as Jaeger last returned it:\n%s", p.Name, tr.dump())
			}
			t.Fatalf("%v: %v", err, problem)
		}
		services := map[string]bool{}
		for _, s := range tr.spans {
			c, _ := attrs(s)["kpath.component"].(string)
			if got := serviceOf[string(s.SpanId)]; got != c {
				t.Errorf("pod %s: span %q of %s is under service.name %q", p.Name, s.Name, c, got)
			}
			services[c] = true
		}
		for _, c := range want {
			if !services[c] {
				t.Errorf("pod %s: no span of %s in its trace; services %v", p.Name, c, services)
			}
		}
		t.Logf("pod %s: %d spans in Jaeger, services %v", p.Name, len(tr.spans), services)
	}

	// kubectl kpath explain reads the pod's trace from Jaeger by its ID and
	// needs no agent: there are none in the namespace it is pointed at.
	plugin := filepath.Join(t.TempDir(), "kubectl-kpath")
	root := dsRepoRoot(t)
	if out, err := dsRun(t, root, nil, "go", "build", "-o", plugin, "./cmd/kubectl-kpath"); err != nil {
		t.Fatalf("build kubectl-kpath: %v\n%s", err, out)
	}
	out, err := dsRun(t, root, []string{"KUBECONFIG=" + filepath.Join(l.dir, "admin.kubeconfig")}, plugin,
		"explain", "pod/"+pods[0].Name, "-n", ns, "--trace-store="+query, "--agent-namespace=kpath-no-agents-here")
	if err != nil {
		t.Errorf("kubectl kpath explain --trace-store: %v\n%s", err, out)
	} else if !strings.Contains(out, "its startup trace from "+query) || !strings.Contains(out, "kubelet/") || !strings.Contains(out, "◀ slowest") {
		t.Errorf("kubectl kpath explain --trace-store said:\n%s", out)
	} else {
		t.Logf("kubectl kpath explain --trace-store:\n%s", out)
	}

	// Jaeger lists the control plane as its services.
	resp, err := http.Get(query + "/api/services")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []string `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	for _, c := range want {
		if !slices.Contains(list.Data, c) {
			t.Errorf("Jaeger's services %v lack %s", list.Data, c)
		}
	}
	if slices.Contains(list.Data, "kpath-agent") {
		t.Errorf("Jaeger lists kpath-agent as a service: spans went out under the agent's name")
	}
}
