// Package dashboards holds kpath's Grafana dashboards (*.json beside this
// file). Its test parses every panel's PromQL and checks that it names only
// metrics the agent exports, and only stages kpath produces, so that a
// renamed metric or stage cannot silently empty a panel.
package dashboards

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/kpath/kpath/correlate"
	"github.com/kpath/kpath/export"
	"github.com/kpath/kpath/probes"
)

// exported is every series name the agent serves: the export package's
// metric-name constants, histograms with their _bucket/_sum/_count series.
func exported() map[string]bool {
	names := map[string]bool{}
	for _, n := range []string{export.MetricProbeHits, export.MetricEventsDropped, export.MetricAttachErrors,
		export.MetricAttachedProbes, export.MetricTraces, export.MetricExportSpans, export.MetricExportDroppedSpans} {
		names[n] = true
	}
	names[export.MetricReconcileTotal] = true
	for _, h := range []string{export.MetricStageDuration, export.MetricReconcileDuration, export.MetricWorkqueueWait, export.MetricWebhookDuration} {
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			names[h+suffix] = true
		}
	}
	return names
}

// stages is every kpath.stage value: the catalogue's rows and the pod
// startup partition (plus watch lag) the correlator measures.
func stages() map[string]bool {
	s := map[string]bool{}
	for _, r := range probes.Catalogue {
		s[r.Stage] = true
	}
	for _, st := range correlate.PodStages {
		s[st] = true
	}
	s[correlate.PodWatchLag] = true
	return s
}

type panel struct {
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Targets     []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // collapsed rows
}

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

// grafanaVars replaces Grafana's variables with PromQL the parser takes:
// range variables by a duration, others (used in label matchers) by ".*".
var grafanaVars = regexp.MustCompile(`\$\{?(__rate_interval|__interval|__range|[A-Za-z_][A-Za-z0-9_]*)(:[a-z]+)?\}?`)

func substitute(expr string) string {
	return grafanaVars.ReplaceAllStringFunc(expr, func(v string) string {
		name := strings.Trim(v, "${}")
		name, _, _ = strings.Cut(name, ":")
		switch name {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		}
		return ".*"
	})
}

func walk(ps []panel, f func(panel)) {
	for _, p := range ps {
		f(p)
		walk(p.Panels, f)
	}
}

func TestDashboardsQueryOnlyExportedMetrics(t *testing.T) {
	files, err := filepath.Glob("*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no dashboards")
	}
	known, knownStages := exported(), stages()
	uids := map[string]string{}
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: dashboard needs a uid and a title", file)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s share uid %q", file, other, d.UID)
		}
		uids[d.UID] = file

		var exprs []string
		for _, v := range d.Templating.List {
			var q struct {
				Query string `json:"query"`
			}
			if json.Unmarshal(v.Query, &q) == nil && strings.HasPrefix(q.Query, "label_values(") {
				// label_values(METRIC, label): check METRIC.
				m := strings.TrimSpace(strings.Split(strings.TrimPrefix(q.Query, "label_values("), ",")[0])
				exprs = append(exprs, m)
			}
		}
		queries := 0
		walk(d.Panels, func(p panel) {
			if p.Type == "row" {
				return
			}
			if p.Description == "" {
				t.Errorf("%s: panel %q has no description", file, p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", file, p.Title)
			}
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
				queries++
			}
		})
		if queries == 0 {
			t.Errorf("%s: no queries", file)
		}

		for _, raw := range exprs {
			expr, err := parser.ParseExpr(substitute(raw))
			if err != nil {
				t.Errorf("%s: %q: %v", file, raw, err)
				continue
			}
			selectors := 0
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				vs, ok := n.(*parser.VectorSelector)
				if !ok {
					return nil
				}
				selectors++
				name := vs.Name
				for _, m := range vs.LabelMatchers {
					if m.Name == labels.MetricName {
						name = m.Value
					}
					if m.Name == "stage" && (m.Type == labels.MatchEqual || m.Type == labels.MatchRegexp) {
						for _, st := range strings.Split(m.Value, "|") {
							if !knownStages[st] {
								t.Errorf("%s: %q: stage %q is not a kpath stage", file, raw, st)
							}
						}
					}
				}
				if !known[name] {
					t.Errorf("%s: %q: metric %q is not exported by kpath-agent (export.Metric* constants)", file, raw, name)
				}
				return nil
			})
			if selectors == 0 {
				t.Errorf("%s: %q selects no metric", file, raw)
			}
		}
	}
}

// TestCheckerCatchesUnknownNames keeps the test above honest.
func TestCheckerCatchesUnknownNames(t *testing.T) {
	known := exported()
	expr, err := parser.ParseExpr(substitute(`histogram_quantile(0.99, sum by (le) (rate(kpath_stage_duration_seconds_bucket{instance=~"$instance"}[$__rate_interval]))) / on() kpath_nope_total`))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			names = append(names, vs.Name)
		}
		return nil
	})
	slices.Sort(names)
	if !slices.Equal(names, []string{"kpath_nope_total", "kpath_stage_duration_seconds_bucket"}) {
		t.Fatalf("selectors %v", names)
	}
	if known["kpath_nope_total"] || !known["kpath_stage_duration_seconds_bucket"] {
		t.Errorf("known set wrong: %v", known)
	}
}
