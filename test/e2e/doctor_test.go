package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDoctorAttachesEveryRow: on the lab's Kubernetes × etcd cell, every
// catalogue row of every control-plane component, detail rows included,
// attaches. A row not covered by the binary's version, not applicable or
// failing fails the test by name, so a cell the catalogue does not fully
// cover cannot pass make test-versions.
func TestDoctorAttachesEveryRow(t *testing.T) {
	needLab(t)
	out, err := exec.Command(agentBin, "doctor", "--detail", "--observe=0").CombinedOutput()
	if err != nil {
		t.Fatalf("kpath-agent doctor --detail: %v\n%s", err, out)
	}
	rows := map[string]int{}
	inTable := false
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "COMPONENT" && f[2] == "ROW" {
			inTable = true
			continue
		}
		if inTable && len(f) == 0 {
			break // the table ends at its first blank line
		}
		if !inTable || len(f) < 5 {
			continue
		}
		comp, row, state := f[0], f[2], f[4]
		rows[comp]++
		if state != "attached" {
			t.Errorf("%s: row %s is %s: %s", comp, row, state, strings.Join(f[5:], " "))
		}
	}
	for _, comp := range []string{"etcd", "kube-apiserver", "kube-scheduler", "kubelet", "kube-controller-manager"} {
		if rows[comp] == 0 {
			t.Errorf("doctor tried no row on %s:\n%s", comp, out)
		}
	}
	t.Logf("rows tried per component (all attached unless reported): %v", rows)
}
