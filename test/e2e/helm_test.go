package e2e

// The Helm chart (deploy/helm/kpath): it lints, renders the same pod as the
// kustomize manifests, passes the API server's dry run, and installed on the
// lab runs an agent that traces pods as the kustomize DaemonSet does.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/yaml"

	"github.com/kpath/kpath/export/otlptest"
)

const chartDir = "deploy/helm/kpath"

// helmBin is the Helm test/lab/build.sh builds ($KPATH_HELM overrides it).
func helmBin(t *testing.T, root string) string {
	t.Helper()
	if h := os.Getenv("KPATH_HELM"); h != "" {
		return h
	}
	b, err := os.ReadFile(filepath.Join(root, "test/lab/versions.env"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^HELM_VERSION=(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("test/lab/versions.env has no HELM_VERSION")
	}
	cache := os.Getenv("KPATH_CACHE_DIR")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache/kpath")
	}
	h := filepath.Join(cache, "bin/tools/helm-"+string(m[1]), "helm")
	if _, err := os.Stat(h); err != nil {
		t.Fatalf("no helm at %s: build it with test/lab/build.sh helm (test/e2e/run.sh does)", h)
	}
	return h
}

// objects decodes a multi-document YAML stream into objects by kind/name.
func objects(t *testing.T, manifests string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	d := yaml.NewYAMLOrJSONDecoder(bufio.NewReader(strings.NewReader(manifests)), 4096)
	for {
		var o map[string]any
		if err := d.Decode(&o); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("decode manifests: %v", err)
		}
		if o == nil {
			continue
		}
		md, _ := o["metadata"].(map[string]any)
		out[fmt.Sprintf("%v/%v", o["kind"], md["name"])] = o
	}
}

// podTemplate is a DaemonSet's pod template, with what may differ between
// the chart and kustomize taken out: the ConfigMap's name (kustomize adds a
// content hash) and the chart's config checksum annotation.
func podTemplate(t *testing.T, ds map[string]any) map[string]any {
	t.Helper()
	b, _ := json.Marshal(ds["spec"].(map[string]any)["template"])
	var tmpl map[string]any
	json.Unmarshal(b, &tmpl)
	md := tmpl["metadata"].(map[string]any)
	delete(md["annotations"].(map[string]any), "checksum/config")
	c := tmpl["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	for _, ef := range c["envFrom"].([]any) {
		ref := ef.(map[string]any)["configMapRef"].(map[string]any)
		ref["name"] = regexp.MustCompile(`-[a-z0-9]{10}$`).ReplaceAllString(ref["name"].(string), "")
	}
	return tmpl
}

func TestHelmChartRendersTheKustomizeDaemonSet(t *testing.T) {
	l := needLab(t)
	env := dsLabEnv(t, l)
	root := dsRepoRoot(t)
	helm := helmBin(t, root)
	kenv := []string{"KUBECONFIG=" + filepath.Join(l.dir, "admin.kubeconfig")}

	if out, err := dsRun(t, root, nil, helm, "lint", "--strict", chartDir); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	chart, err := dsRun(t, root, nil, helm, "template", "kpath", chartDir, "--namespace", dsNamespace)
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, chart)
	}
	kust, err := dsRun(t, root, nil, env["KUBECTL"], "kustomize", "deploy/daemonset")
	if err != nil {
		t.Fatalf("kubectl kustomize: %v\n%s", err, kust)
	}
	co, ko := objects(t, chart), objects(t, kust)
	cds, kds := co["DaemonSet/kpath-agent"], ko["DaemonSet/kpath-agent"]
	if cds == nil || kds == nil {
		t.Fatalf("a DaemonSet kpath-agent is missing: chart has %v, kustomize %v", keys(co), keys(ko))
	}
	if cp, kp := podTemplate(t, cds), podTemplate(t, kds); !reflect.DeepEqual(cp, kp) {
		cb, _ := json.MarshalIndent(cp, "", " ")
		kb, _ := json.MarshalIndent(kp, "", " ")
		t.Errorf("the chart's pod differs from kustomize's:\nchart:\n%s\nkustomize:\n%s", cb, kb)
	}
	for _, k := range []string{"ServiceAccount/kpath-agent", "ClusterRole/kpath-agent", "ClusterRoleBinding/kpath-agent", "Service/kpath-agent-metrics",
		"ClusterRoleBinding/kpath-agent-auth-delegator",
		"ClusterRole/kpath-metrics-reader", "ClusterRole/kpath-traces-reader", "Role/kpath-explain"} {
		switch {
		case co[k] == nil || ko[k] == nil:
			t.Errorf("%s: in the chart %v, in kustomize %v", k, co[k] != nil, ko[k] != nil)
		case !reflect.DeepEqual(co[k]["rules"], ko[k]["rules"]):
			t.Errorf("%s: RBAC rules differ: chart %v, kustomize %v", k, co[k]["rules"], ko[k]["rules"])
		case !reflect.DeepEqual(co[k]["roleRef"], ko[k]["roleRef"]):
			t.Errorf("%s: roleRef differs: chart %v, kustomize %v", k, co[k]["roleRef"], ko[k]["roleRef"])
		}
	}
	// metrics.auth=none: plain HTTP, no delegation RBAC; a typo fails the render.
	open, err := dsRun(t, root, nil, helm, "template", "kpath", chartDir, "--namespace", dsNamespace, "--set", "metrics.auth=none")
	if err != nil {
		t.Fatalf("helm template with metrics.auth=none: %v\n%s", err, open)
	}
	if oo := objects(t, open); !strings.Contains(open, "--metrics-auth=none") || strings.Contains(open, "scheme: HTTPS") || oo["ClusterRoleBinding/kpath-agent-auth-delegator"] != nil {
		t.Errorf("helm template with metrics.auth=none:\n%s", open)
	}
	if out, err := dsRun(t, root, nil, helm, "template", "kpath", chartDir, "--set", "metrics.auth=open"); err == nil || !strings.Contains(out, `metrics.auth="open": want kubernetes or none`) {
		t.Errorf("helm template with metrics.auth=open: err %v\n%s", err, out)
	}

	// Every value people set renders, and the API server takes the result.
	all, err := dsRun(t, root, nil, helm, "template", "kpath", chartDir, "--namespace", dsNamespace,
		"--set", "dashboards.enabled=true,serviceMonitor.enabled=true,extraCapabilities={SYS_ADMIN}",
		"--set", "detailRows={etcd.wal.fsync},clientGoPrograms={my-operator},otlp.headers.x-tenant=team a",
		"--set", "otlp.headersSecret.name=otlp-auth,otlp.headersSecret.key=headers,hashNamesSecret.name=kpath-hash",
		"--set", "nodeSelector.kpath=yes,resources.limits.memory=1Gi")
	if err != nil {
		t.Fatalf("helm template with every value: %v\n%s", err, all)
	}
	ao := objects(t, all)
	for _, want := range []string{"--detail-rows=etcd.wal.fsync", "--client-go-programs=my-operator", "--hash-names-key-file=", `"SYS_ADMIN"`,
		"x-tenant=team+a", "secretKeyRef", "ServiceMonitor/kpath-agent", "grafana_dashboard", "bearerTokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token"} {
		if !strings.Contains(all, want) && ao[want] == nil {
			t.Errorf("helm template with every value: no %q in the output", want)
		}
	}
	for _, f := range []string{"kpath-agent.json", "kpath-control-plane.json"} {
		a, _ := os.ReadFile(filepath.Join(root, "deploy/dashboards", f))
		b, _ := os.ReadFile(filepath.Join(root, chartDir, "dashboards", f))
		if !bytes.Equal(a, b) {
			t.Errorf("%s/dashboards/%s differs from deploy/dashboards/%s: copy it over", chartDir, f, f)
		}
	}
	// No ServiceMonitor CRD on the lab: the dry run takes the rest.
	ns := makeNamespace(context.Background(), t, l, "kpath-e2e-helm-")
	manifests, err := dsRun(t, root, nil, helm, "template", "kpath", chartDir, "--namespace", ns, "--set", "dashboards.enabled=true")
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "chart.yaml")
	os.WriteFile(f, []byte(manifests), 0o644)
	if out, err := dsRun(t, root, kenv, env["KUBECTL"], "apply", "--dry-run=server", "-f", f); err != nil {
		t.Errorf("server-side dry run of the chart: %v\n%s", err, out)
	}
}

func keys(m map[string]map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestHelmInstallTracesPods(t *testing.T) {
	l := needLab(t)
	env := dsLabEnv(t, l)
	kubectl := env["KUBECTL"]
	root := dsRepoRoot(t)
	helm := helmBin(t, root)
	kenv := []string{"KUBECONFIG=" + filepath.Join(l.dir, "admin.kubeconfig")}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	if out, err := dsRun(t, root, []string{"KPATH_LAB_DIR=" + l.dir}, "make", "--no-print-directory", "image-lab"); err != nil {
		t.Fatalf("make image-lab: %v\n%s", err, out)
	}

	// The lab's needs, as the kustomize lab overlay has them: the imported
	// image, and the API server on the host's loopback (no kube-proxy).
	rcv := otlptest.Start(t)
	port := freeAddr(t)[len("127.0.0.1:"):]
	values := fmt.Sprintf(`image:
  repository: kpath.local/kpath-agent
  tag: dev
  pullPolicy: Never
otlp:
  endpoint: %s
metrics:
  port: %s
extraArgs: [--scan-interval=500ms]
extraEnv:
  - name: KUBERNETES_SERVICE_HOST
    value: 127.0.0.1
  - name: KUBERNETES_SERVICE_PORT
    value: "6443"
`, rcv.Addr(), port)
	vf := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(vf, []byte(values), 0o644); err != nil {
		t.Fatal(err)
	}
	dsRun(t, root, kenv, helm, "uninstall", "kpath", "--namespace", dsNamespace, "--wait", "--ignore-not-found")
	if out, err := dsRun(t, root, kenv, helm, "install", "kpath", chartDir, "--namespace", dsNamespace, "--create-namespace", "--values", vf); err != nil {
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := dsRun(t, root, kenv, kubectl, "-n", dsNamespace, "logs", "-l", dsSelector, "--tail=40")
			t.Logf("agent log (tail):\n%s", out)
		}
		if out, err := dsRun(t, root, kenv, helm, "uninstall", "kpath", "--namespace", dsNamespace, "--wait", "--timeout=120s"); err != nil {
			t.Logf("helm uninstall: %v\n%s", err, out)
		}
	})
	agentPod, _, _ := dsAgentTracesPods(ctx, t, l, rcv, port)
	t.Logf("helm-installed agent pod %s traced %d pods", agentPod.Name, dsPods)
}
