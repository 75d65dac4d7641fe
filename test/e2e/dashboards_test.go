package e2e

// Every dashboard panel, evaluated by the lab's Prometheus after a workload
// that exercises what the panels show: each query returns data.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kpath/kpath/export/otlptest"
)

type dashboardQuery struct {
	dashboard, panel, expr string
}

// dashboardQueries reads every panel target of deploy/dashboards/*.json.
func dashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	files, err := filepath.Glob("../../deploy/dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in deploy/dashboards (%v)", err)
	}
	var out []dashboardQuery
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					Expr string `json:"expr"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				if tg.Expr != "" {
					out = append(out, dashboardQuery{filepath.Base(f), p.Title, tg.Expr})
				}
			}
		}
	}
	return out
}

// promQuery evaluates expr now and returns how many series it gave that
// hold a number.
func promQuery(ctx context.Context, prom, expr string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, prom+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, err
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("%s", r.Error)
	}
	var series []struct {
		Value [2]any `json:"value"`
	}
	if err := json.Unmarshal(r.Data.Result, &series); err != nil {
		// A scalar or string result is one value.
		return 1, nil
	}
	n := 0
	for _, s := range series {
		// A quantile of nothing is NaN: an empty panel, not data.
		if v, _ := s.Value[1].(string); v != "NaN" {
			n++
		}
	}
	return n, nil
}

func TestDashboardPanelsHaveData(t *testing.T) {
	l := needLab(t)
	prom, addr := l.env("KPATH_LAB_PROMETHEUS_URL"), l.env("KPATH_LAB_AGENT_METRICS")
	if prom == "" || addr == "" {
		t.Skip("skipped: the lab runs without Prometheus (KPATH_LAB_PROMETHEUS=off)")
	}
	queries := dashboardQueries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The workload: ConfigMap creates through a mutating and a validating
	// webhook, pods that start, and Widgets the lab's operator reconciles.
	ws := startWebhooks(t, map[string]time.Duration{"/mutate": 5 * time.Millisecond, "/validate": 5 * time.Millisecond})
	ns := makeNamespace(ctx, t, l, "kpath-e2e-dash-")
	installWebhooks(ctx, t, l, ns, ws, "mutate.kpath.io", "validate.kpath.io")
	dyn := dynamicClient(t, l)
	installWidgetCRD(ctx, t, dyn)
	waitQuiet(ctx, t, l)
	started := time.Now()
	a := startAgent(t, otlptest.Start(t).Addr(), "--metrics-addr="+addr)
	// And an operator, found by the agent with no flag: its panels too.
	startWidgetop(ctx, t, l, a, ns)
	// As Grafana puts a regex variable into a PromQL string: escaped twice.
	instance := strings.ReplaceAll(regexp.QuoteMeta(addr), `\`, `\\`)
	if err := waitFor(ctx, "Prometheus scraping the agent", func() (bool, error) {
		n, err := promQuery(ctx, prom, fmt.Sprintf(`up{instance=%q} == 1`, addr))
		return err == nil && n > 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	// Two waves, seconds apart: a series is scraped first with the value it
	// has when it appears, so rate() and increase() see only what comes
	// after, as on a cluster with steady traffic.
	cms := l.client.CoreV1().ConfigMaps(ns)
	const pods = 2
	for wave := range 2 {
		for i := range 5 {
			if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("dash-%d-%d", wave, i)}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range pods {
			if _, err := l.client.CoreV1().Pods(ns).Create(ctx, runningPod(fmt.Sprintf("dash-%d-%d", wave, i)), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		// A reconcile that fails and its retry: every operator panel, the
		// errors' too, has data.
		createWidget(ctx, t, dyn, ns, fmt.Sprintf("dash-%d", wave), "kpath.dev/fail-first")
		if _, err := waitRunning(ctx, l, ns, (wave+1)*pods); err != nil {
			t.Fatal(err)
		}
		if err := waitFor(ctx, "the wave's pod startups and webhook calls in the agent's metrics", func() (bool, error) {
			m, err := a.scrape()
			return err == nil && m.sum("kpath_stage_duration_seconds_count", "stage", "container-start", "resource", "pods") >= float64((wave+1)*pods) &&
				m.sum("kpath_stage_duration_seconds_count", "stage", "admission-webhook") >= float64((wave+1)*10) &&
				m.sum("kpath_reconcile_total", "component", "widgetop", "result", "error") >= float64(wave+1) &&
				m.sum("kpath_workqueue_wait_seconds_count", "component", "widgetop") >= float64(2*(wave+1)), nil
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second) // Prometheus scrapes every second: several samples of each wave
	}

	// Grafana's variables as a user would have them: this agent, a rate
	// window of several scrapes, the dashboard's range since the agent began.
	rangeS := fmt.Sprintf("%ds", int(time.Since(started).Seconds())+5)
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__range", rangeS, "$instance", instance)
	for _, q := range queries {
		expr := vars.Replace(q.expr)
		n, err := promQuery(ctx, prom, expr)
		switch {
		case err != nil:
			t.Errorf("%s / %q: %v\n  query: %s", q.dashboard, q.panel, err, expr)
		case n == 0:
			t.Errorf("%s / %q: no data after the workload\n  query: %s", q.dashboard, q.panel, expr)
		default:
			t.Logf("%s / %q: %d series", q.dashboard, q.panel, n)
		}
	}
}
