package probes

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOperatorsAreFoundByBuildInfo(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A Go binary without controller-runtime (the test binary; the e2e
	// finds the lab's operator), a script, a file that is not there.
	o := NewOperators()
	for i := 0; i < 2; i++ { // the second answer comes from the cache
		if c, ok := o.Is(self, self); ok {
			t.Errorf("the probes test binary was taken for an operator (%s)", c)
		}
	}
	if len(o.known) != 1 {
		t.Errorf("%d binaries cached for one", len(o.known))
	}
	notGo := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notGo, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{notGo, filepath.Join(t.TempDir(), "missing")} {
		if _, ok := o.Is(p, p); ok {
			t.Errorf("%s was taken for an operator", p)
		}
	}
	if o.Has("probes.test") || (*Operators)(nil).Has("x") {
		t.Error("Has says yes for a component never found")
	}
}
