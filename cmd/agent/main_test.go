package main

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
)

func TestDetailRowsFlag(t *testing.T) {
	c, err := parseFlags([]string{"--detail-rows=etcd.wal.fsync, etcd.request.txn"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.detailRows, []string{"etcd.wal.fsync", "etcd.request.txn"}) {
		t.Errorf("detail rows %q", c.detailRows)
	}
	// A default row or a typo is refused, naming it and the rows there are.
	for _, bad := range []string{"etcd.apply.put", "etcd.wal.fsnyc"} {
		_, err := parseFlags([]string{"--detail-rows=" + bad})
		if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "etcd.wal.fsync") {
			t.Errorf("--detail-rows=%s: %v", bad, err)
		}
	}
}

func TestExportFlag(t *testing.T) {
	for _, ok := range []string{"otlp", "jsonl", "console", "console,otlp", "otlp, jsonl"} {
		if _, err := parseFlags([]string{"--export=" + ok}); err != nil {
			t.Errorf("--export=%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "zipkin", "console,jsonl", "otlp,files"} {
		if _, err := parseFlags([]string{"--export=" + bad}); err == nil {
			t.Errorf("--export=%q accepted", bad)
		}
	}
}

func TestOTLPHeadersFlag(t *testing.T) {
	c, err := parseFlags([]string{"--otlp-headers=Authorization=Bearer%20abc, x-tenant=t1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.otlpHeaders["authorization"] != "Bearer abc" || c.otlpHeaders["x-tenant"] != "t1" || len(c.otlpHeaders) != 2 {
		t.Errorf("headers %v", c.otlpHeaders)
	}
	for _, bad := range []string{"novalue", "=v", "k=%zz"} {
		if _, err := parseFlags([]string{"--otlp-headers=" + bad}); err == nil {
			t.Errorf("--otlp-headers=%s accepted", bad)
		}
	}
}

func TestMetricsAuthFlag(t *testing.T) {
	for _, c := range []struct{ args, want string }{
		{"", "none"}, // 127.0.0.1:9464
		{"--metrics-addr=localhost:9464", "none"},
		{"--metrics-addr=[::1]:9464", "none"},
		{"--metrics-addr=0.0.0.0:9464", "kubernetes"},
		{"--metrics-addr=:9464", "kubernetes"},
		{"--metrics-addr=10.0.0.5:9464", "kubernetes"},
		{"--metrics-addr=0.0.0.0:9464 --metrics-auth=none", "none"},
		{"--metrics-auth=kubernetes", "kubernetes"},
	} {
		cfg, err := parseFlags(strings.Fields(c.args))
		if err != nil || cfg.metricsAuth != c.want {
			t.Errorf("%q: metrics auth %q (%v), want %q", c.args, cfg.metricsAuth, err, c.want)
		}
	}
	if _, err := parseFlags([]string{"--metrics-auth=basic"}); err == nil || !strings.Contains(err.Error(), "want kubernetes, none or auto") {
		t.Errorf("--metrics-auth=basic: %v", err)
	}
	// Outside a cluster, without a kubeconfig, a guarded address cannot be served: the agent says how to go on.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	cfg, err := parseFlags([]string{"--metrics-addr=0.0.0.0:0"})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = endpointAccess(t.Context(), cfg, nil, slog.Default())
	if err == nil || !strings.Contains(err.Error(), "--metrics-auth=none") || !strings.Contains(err.Error(), "--kubeconfig") {
		t.Errorf("no API server: %v", err)
	}
}
