package main

import (
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
