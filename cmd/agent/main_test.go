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
