package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
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
	d.rows = append(d.rows, rowLine{comp: "etcd", pid: "1", row: "etcd.wal.fsync", stage: "wal-fsync", state: "failed", version: "v3.6.16", reason: "permission denied"})
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
	d.add(check{name: "CAP_SYS_ADMIN", status: statusInfo, detail: "absent, not required"})
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

// The capabilities of the DaemonSet (deploy/daemonset/base/daemonset.yaml).
const dsCaps = capSet(1<<capBPF | 1<<capPerfmon | 1<<capSysPtrace)

func TestSysAdminRequiredOnlyWithoutUprobeMulti(t *testing.T) {
	for _, tc := range []struct {
		multi   multiSupport
		present bool
		rule    perfRule
		want    checkStatus
	}{
		// uprobe_multi: never required, whatever the perf event rule.
		{multiYes, false, ruleSysAdmin, statusInfo},
		{multiYes, true, ruleSysAdmin, statusInfo},
		{multiYes, false, ruleUnknown, statusInfo},
		// The BPF program did not load: not known, its own check fails.
		{multiUnknown, false, ruleUnknown, statusInfo},
		// No uprobe_multi: required only where the kernel demands it.
		{multiNo, false, ruleSysAdmin, statusFail},
		{multiNo, true, ruleSysAdmin, statusOK},
		{multiNo, false, rulePerfmon, statusInfo},
		{multiNo, true, rulePerfmon, statusInfo},
		{multiNo, false, ruleUnknown, statusWarn},
	} {
		c := sysAdminCheck(tc.multi, tc.present, tc.rule, "why")
		if c.name != "CAP_SYS_ADMIN" || c.status != tc.want {
			t.Errorf("multi %d present %v rule %d: %s %s (%s), want %s", tc.multi, tc.present, tc.rule, c.name, c.status, c.detail, tc.want)
		}
		if (c.status == statusFail) != (c.fix == sysAdminFix) {
			t.Errorf("multi %d present %v rule %d: status %s, fix %q", tc.multi, tc.present, tc.rule, c.status, c.fix)
		}
		wantHas := "absent"
		if tc.present {
			wantHas = "present"
		}
		if !strings.HasPrefix(c.detail, wantHas) {
			t.Errorf("multi %d present %v: detail %q does not say %s", tc.multi, tc.present, c.detail, wantHas)
		}
	}
	if c := sysAdminCheck(multiYes, true, ruleSysAdmin, ""); !strings.Contains(c.detail, "can be dropped") {
		t.Errorf("with uprobe_multi, a present CAP_SYS_ADMIN is not called droppable: %s", c.detail)
	}
}

func TestUprobePermissionInformationalWithUprobeMulti(t *testing.T) {
	for _, tc := range []struct {
		err     error
		caps    capSet
		multi   multiSupport
		want    checkStatus
		wantFix string
	}{
		{nil, dsCaps, multiYes, statusOK, ""},
		{unix.EACCES, dsCaps, multiYes, statusInfo, ""},
		{unix.EPERM, dsCaps, multiYes, statusInfo, ""},
		{unix.EACCES, dsCaps &^ (1 << capBPF), multiUnknown, statusInfo, ""},
		{nil, dsCaps, multiNo, statusOK, ""},
		{unix.EACCES, dsCaps, multiNo, statusFail, sysAdminFix},
		{unix.EPERM, dsCaps, multiNo, statusFail, "perf_event_open(2) was refused with EPERM"},
		{unix.EACCES, dsCaps | 1<<capSysAdmin, multiNo, statusFail, "refused even with CAP_SYS_ADMIN"},
		{unix.EACCES, 1<<capBPF | 1<<capSysPtrace, multiNo, statusFail, ""},
		{unix.EINVAL, dsCaps, multiNo, statusWarn, ""},
	} {
		c := permissionCheck(tc.err, tc.caps, tc.multi)
		if c.name != "uprobe permission" || c.status != tc.want || !strings.Contains(c.fix, tc.wantFix) || (tc.wantFix == "") != (c.fix == "") {
			t.Errorf("err %v caps %x multi %d: %s %s (%s) fix %q, want %s fix %q", tc.err, uint64(tc.caps), tc.multi, c.name, c.status, c.detail, c.fix, tc.want, tc.wantFix)
		}
	}
}

func TestPerfRuleOf(t *testing.T) {
	if r, _ := perfRuleOf(nil, dsCaps); r != rulePerfmon {
		t.Errorf("allowed with CAP_PERFMON: rule %d", r)
	}
	if r, why := perfRuleOf(unix.EACCES, dsCaps); r != ruleSysAdmin || !strings.Contains(why, "only for CAP_SYS_ADMIN") {
		t.Errorf("EACCES with CAP_PERFMON: rule %d (%s)", r, why)
	}
	if r, _ := perfRuleOf(unix.EACCES, 1<<capBPF); r != ruleUnknown {
		t.Errorf("EACCES without CAP_PERFMON: rule %d, want unknown", r)
	}
	if r, _ := perfRuleOf(unix.EPERM, dsCaps); r != ruleUnknown {
		t.Errorf("EPERM (seccomp): rule %d, want unknown", r)
	}
}

func TestRowsPermissionFix(t *testing.T) {
	for _, tc := range []struct {
		caps         capSet
		multi        multiSupport
		needSysAdmin bool
		want         string
	}{
		{dsCaps &^ (1 << capSysPtrace), multiYes, false, "CAP_SYS_PTRACE missing"},
		{dsCaps, multiYes, false, "attaching uprobe_multi links was refused"},
		{dsCaps, multiNo, true, "CAP_SYS_ADMIN missing"},
		{dsCaps | 1<<capSysAdmin, multiNo, true, "attaching uprobes was refused"},
		{dsCaps, multiNo, false, "attaching uprobes was refused"},
	} {
		if got := rowsPermissionFix(tc.caps, tc.multi, tc.needSysAdmin); !strings.HasPrefix(got, tc.want) {
			t.Errorf("caps %x multi %d needSysAdmin %v: %q, want %q…", uint64(tc.caps), tc.multi, tc.needSysAdmin, got, tc.want)
		}
	}
}

// TestSelfUprobeWithoutSysAdmin checks, as root, that the kernel's rule is
// read on a thread without CAP_SYS_ADMIN while the process keeps it.
func TestSelfUprobeWithoutSysAdmin(t *testing.T) {
	eff, _, err := readCaps()
	if err != nil {
		t.Fatal(err)
	}
	if !eff.has(capSysAdmin) || !eff.has(capPerfmon) {
		t.Skip("needs CAP_SYS_ADMIN and CAP_PERFMON (run as root)")
	}
	u, skip := newSelfUprobe()
	if skip != "" {
		t.Skip(skip)
	}
	if err, _ := u.open(false); err != nil {
		t.Fatalf("with CAP_SYS_ADMIN: %v", err)
	}
	withoutErr, setupErr := u.open(true)
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	rule, why := u.rule(eff, nil)
	t.Logf("without CAP_SYS_ADMIN: %v; rule %d: %s", withoutErr, rule, why)
	var uts unix.Utsname
	unix.Uname(&uts)
	if maj, min, ok := kernelVersion(unix.ByteSliceToString(uts.Release[:])); ok && (maj > 6 || maj == 6 && min >= 16) {
		if !errors.Is(withoutErr, unix.EACCES) || rule != ruleSysAdmin {
			t.Errorf("Linux %d.%d without CAP_SYS_ADMIN: %v, rule %d; want EACCES, CAP_SYS_ADMIN", maj, min, withoutErr, rule)
		}
	}
	// The drop was the test thread's only.
	if err, _ := u.open(false); err != nil {
		t.Errorf("after the test thread dropped CAP_SYS_ADMIN: %v", err)
	}
	if now, _, _ := readCaps(); now != eff {
		t.Errorf("CapEff %x after the test, was %x", uint64(now), uint64(eff))
	}
}
