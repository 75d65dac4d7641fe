package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKernelVersion(t *testing.T) {
	for rel, want := range map[string][2]int{
		"6.18.44-fc-v657": {6, 18}, "5.15.0-105-generic": {5, 15}, "6.1": {6, 1}, "5.4.0+": {5, 4},
	} {
		maj, min, ok := kernelVersion(rel)
		if !ok || maj != want[0] || min != want[1] {
			t.Errorf("%s: %d.%d %v", rel, maj, min, ok)
		}
	}
	if _, _, ok := kernelVersion("garbage"); ok {
		t.Error("garbage parsed")
	}
}

func TestHostPIDNamespace(t *testing.T) {
	dir := t.TempDir()
	if hostPIDNamespace(dir) {
		t.Error("empty /proc is the host's")
	}
	os.MkdirAll(filepath.Join(dir, "2"), 0o755)
	os.WriteFile(filepath.Join(dir, "2", "comm"), []byte("kthreadd\n"), 0o644)
	if !hostPIDNamespace(dir) {
		t.Error("kthreadd at PID 2 not recognised")
	}
}

func TestReportFixesAndExit(t *testing.T) {
	var out bytes.Buffer
	d := &doctor{out: &out}
	d.add(check{name: "kernel", status: statusOK, detail: "6.18"})
	d.add(check{name: "capabilities", status: statusFail, detail: "CapEff 0", fix: "CAP_BPF missing (x): add it to securityContext.capabilities.add"})
	d.add(check{name: "", status: statusFail, fix: "CAP_SYS_PTRACE missing (y): add it to securityContext.capabilities.add"})
	d.add(check{name: "catalogue rows", status: statusFail, detail: "denied", fix: sysAdminFix})
	d.add(check{name: "uprobe permission", status: statusFail, detail: "denied", fix: sysAdminFix})
	d.rows = append(d.rows, rowLine{"etcd", "1", "etcd.wal.fsync", "wal-fsync", "failed", "v3.6.16", "permission denied"})
	err := d.report()
	if err == nil || !strings.Contains(err.Error(), "4 required check(s) failed") {
		t.Errorf("err = %v", err)
	}
	s := out.String()
	for _, want := range []string{"FIX: CAP_BPF missing", "FIX: CAP_SYS_PTRACE missing", "etcd.wal.fsync", "COMPONENT"} {
		if !strings.Contains(s, want) {
			t.Errorf("no %q in:\n%s", want, s)
		}
	}
	if strings.Count(s, "FIX: CAP_SYS_ADMIN missing") != 1 {
		t.Errorf("the same fix printed more than once:\n%s", s)
	}

	out.Reset()
	d = &doctor{out: &out}
	d.add(check{name: "kernel", status: statusOK})
	d.add(check{name: "components", status: statusWarn, detail: "none"})
	if err := d.report(); err != nil || !strings.Contains(out.String(), "every required check passed") {
		t.Errorf("warnings only: err %v, output:\n%s", err, out.String())
	}
}

func TestReadCaps(t *testing.T) {
	eff, uid, err := readCaps()
	if err != nil {
		t.Fatal(err)
	}
	if uid < 0 {
		t.Errorf("uid %d", uid)
	}
	if os.Geteuid() == 0 && eff == 0 {
		t.Log("root without effective capabilities (a restricted container?)")
	}
}
