package probes

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/semver"
)

func TestCatalogueRowsAreValid(t *testing.T) {
	// An ID names one probe point; it has several rows only as variants for
	// disjoint version ranges of the same module, component and stage.
	ids := map[string][]*Row{}
	for i := range Catalogue {
		r := &Catalogue[i]
		if err := r.Validate(); err != nil {
			t.Error(err)
		}
		for _, o := range ids[r.ID] {
			if o.Module != r.Module || o.Component != r.Component || o.Stage != r.Stage || o.Detail != r.Detail {
				t.Errorf("row ID %s: variants differ in module, component, stage or detail", r.ID)
			}
			if rangesOverlap(t, o.Versions, r.Versions) {
				t.Errorf("row ID %s: variants %q and %q overlap", r.ID, o.Versions, r.Versions)
			}
		}
		ids[r.ID] = append(ids[r.ID], r)
		if r.Hits == "" {
			t.Errorf("row %s does not say how often it fires", r.ID)
		}
	}
}

func TestRowVersionRanges(t *testing.T) {
	r := Row{ID: "x", Module: "m", Versions: ">=v0.33.0 <v0.36.0"}
	for v, want := range map[string]bool{"v0.32.9": false, "v0.33.0": true, "v0.35.4": true, "v0.36.0": false, "v0.35.4-rc.1": true} {
		got, err := r.Applies(v)
		if err != nil || got != want {
			t.Errorf("Applies(%s) = %v, %v; want %v", v, got, err, want)
		}
	}
	if _, err := r.Applies("devel"); err == nil {
		t.Error("Applies(devel) did not fail")
	}
	bad := Row{ID: "y", Component: "c", Stage: "s", Symbol: "f", Module: "m", Versions: "~v1"}
	if err := bad.Validate(); err == nil {
		t.Error("a malformed range validated")
	}
}

// TestCatalogueResolvesInLabBinaries checks every row against every lab
// build (normal and stripped release-like): the row applies to the
// binary's module version, its symbol is in .gopclntab, and a timed row has
// RETs to put probes on.
func TestCatalogueResolvesInLabBinaries(t *testing.T) {
	found := false
	for name, comp := range Targets {
		for _, path := range labBinaries(name) {
			found = true
			flavour := filepath.Base(filepath.Dir(filepath.Dir(path)))
			t.Run(name+"/"+flavour+"/"+filepath.Base(filepath.Dir(path)), func(t *testing.T) {
				b, err := OpenBinary(path)
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()
				if _, err := layoutFor(b.GoVersion); err != nil {
					t.Error(err)
				}
				for i := range Catalogue {
					r := &Catalogue[i]
					// A client-go program's rows are checked on the scheduler,
					// which is one.
					if r.Component != comp && !(r.Component == AnyClientGo && comp == KubeScheduler) {
						continue
					}
					v, err := b.ModuleVersion(r.Module)
					if err != nil {
						t.Errorf("%s: %v", r.ID, err)
						continue
					}
					if ok, err := r.Applies(v); !ok || err != nil {
						// Fine when another variant of the row applies.
						if !slices.ContainsFunc(Catalogue, func(o Row) bool { ok, _ := o.Applies(v); return o.ID == r.ID && ok }) {
							t.Errorf("%s: %s %s not in %q (%v)", r.ID, r.Module, v, r.Versions, err)
						}
						continue
					}
					fn, err := b.Func(r.Symbol)
					if err != nil {
						t.Errorf("%s: %v", r.ID, err)
						continue
					}
					if r.Timed {
						rets, err := b.Returns(fn)
						if err != nil || len(rets) == 0 {
							t.Errorf("%s: %d RETs, %v", r.ID, len(rets), err)
						}
					}
					if len(r.CalledFrom) > 0 {
						// Every probed CALL is found, and the caller saved
						// what the row reads from its frame.
						sites, err := callSitesOf(b, r, fn)
						if err != nil {
							t.Errorf("%s: %v", r.ID, err)
						}
						for _, s := range sites {
							if _, err := resolveSaved(r, s); err != nil {
								t.Errorf("%s: %v", r.ID, err)
							}
						}
						continue
					}
					// Every entry probe lands on the emulated frame-pointer
					// push: a row whose function has another prologue would
					// cost a single-step a hit, and must say why in its docs.
					if site, atPush, err := b.EntrySite(fn); err != nil || !atPush {
						t.Errorf("%s: entry probe at file offset %#x (function at %#x) is not on PUSHQ BP: %v", r.ID, site, fn.FileOffset, err)
					}
				}
			})
		}
	}
	if !found {
		t.Skip("skipped: no lab binaries under ~/.cache/kpath/bin (make lab-up builds them)")
	}
}

// TestDefaultRowsHaveNoRET: a RET is single-stepped (21–24 µs a hit here,
// against 0.75 µs on the push or a CALL), so no default row probes one.
func TestDefaultRowsHaveNoRET(t *testing.T) {
	for _, r := range Catalogue {
		if !r.Detail && (r.Timed || len(r.Exit) > 0) {
			t.Errorf("row %s probes RETs by default: make it a detail row or end its span at a completion site", r.ID)
		}
	}
}

// TestSpansPair: every span an Opens row starts has a Closes row that ends
// it, in the same component and joined the same way, and the reverse.
func TestSpansPair(t *testing.T) {
	type end struct {
		comp Component
		by   JoinKey
	}
	opens, closes := map[string][]end{}, map[string][]end{}
	for _, r := range Catalogue {
		switch r.Role {
		case Opens:
			opens[r.Pair] = append(opens[r.Pair], end{r.Component, r.By})
		case Closes:
			closes[r.Pair] = append(closes[r.Pair], end{r.Component, r.By})
		}
	}
	for pair, os := range opens {
		for _, o := range os {
			if !slices.Contains(closes[pair], o) {
				t.Errorf("span %s opened in %s by %s has no row closing it the same way", pair, o.comp, o.by)
			}
		}
	}
	for pair, cs := range closes {
		for _, c := range cs {
			if !slices.Contains(opens[pair], c) {
				t.Errorf("span %s closed in %s by %s has no row opening it", pair, c.comp, c.by)
			}
		}
	}
}

// TestWriteHitBudget: a plain write (one request, one etcd txn, no webhook)
// may cost at most 4 probe hits inside kube-apiserver, every one an entry
// (or CALL) hit: the handler, MonitorRequest, the txn and its end.
func TestWriteHitBudget(t *testing.T) {
	for _, verb := range []string{"create", "update", "patch", "delete"} {
		hits := 0
		for _, r := range Catalogue {
			if r.Component != KubeAPIServer || r.Detail {
				continue
			}
			passes := r.ID == "apiserver.request."+verb || r.ID == "apiserver.request.end" || r.ID == "apiserver.etcd.done" ||
				r.ID == "apiserver.etcd.put" && verb != "delete" || r.ID == "apiserver.etcd.delete" && verb == "delete"
			if passes {
				hits++
			}
		}
		if hits != 4 {
			t.Errorf("a plain %s costs %d hits in kube-apiserver, budget 4", verb, hits)
		}
	}
	// Nothing else in kube-apiserver may fire per write unless it is a
	// detail row or a webhook row (1 per webhook called, 2 with its RET).
	for _, r := range Catalogue {
		if r.Component == KubeAPIServer && !r.Detail && r.Stage != StageRequest && r.Stage != StageStorageWrite && r.Stage != StageAdmission {
			t.Errorf("row %s fires in kube-apiserver by default on stage %s: outside the write budget", r.ID, r.Stage)
		}
	}
}

// rangesOverlap says whether two ">=vA <vB" ranges share a version.
func rangesOverlap(t *testing.T, a, b string) bool {
	t.Helper()
	alo, ahi, err1 := parseRange(a)
	blo, bhi, err2 := parseRange(b)
	if err1 != nil || err2 != nil || alo == "" || ahi == "" || blo == "" || bhi == "" {
		t.Errorf("variant ranges must be closed: %q, %q", a, b)
		return true
	}
	return semver.Compare(alo, bhi) < 0 && semver.Compare(blo, ahi) < 0
}

// TestDetailRowsByIDBringTheirComponent: a component whose only rows are
// detail rows (kube-controller-manager) is attached when one of them is
// asked for by ID, as with --detail, and not otherwise.
func TestDetailRowsByIDBringTheirComponent(t *testing.T) {
	for _, c := range []struct {
		opts Options
		want bool
	}{
		{Options{}, false},
		{Options{Detail: true}, true},
		{Options{DetailRows: []string{"watcher.informer.receive"}}, true},
		{Options{DetailRows: []string{"etcd.wal.fsync"}}, false},
	} {
		// A component whose only row is a detail row, beside the catalogue.
		const watcher Component = "watcher"
		rows := append(slices.Clone(Catalogue), Row{ID: "watcher.informer.receive", Component: watcher, Detail: true})
		tr := &Tracer{rows: rows, opts: c.opts}
		if got := tr.hasRows(watcher); got != c.want {
			t.Errorf("options %+v: a component with only a detail row has rows to attach %v, want %v", c.opts, got, c.want)
		}
	}
}

// TestVariantsCollapse: a probe point with version variants says one thing
// per process: the variant tried, or once that no variant covers this
// version, with every range and whether the version is older than all.
func TestVariantsCollapse(t *testing.T) {
	old := &Row{ID: "p", Module: "k8s.io/apiserver", Versions: ">=v0.33.0 <v0.36.0"}
	cur := &Row{ID: "p", Module: "k8s.io/apiserver", Versions: ">=v0.36.0 <v0.38.0"}
	other := &Row{ID: "q", Module: "go.etcd.io/etcd/server/v3"}
	outside := func(r *Row, v string) RowStatus {
		return RowStatus{Row: r, State: RowNotCovered, Version: v, Err: fmt.Errorf("%w: outside", ErrNotCovered)}
	}
	got := collapseVariants([]RowStatus{outside(old, "v0.36.1"), {Row: cur, State: RowAttached, Version: "v0.36.1"}, {Row: other, State: RowNotApplicable}})
	if len(got) != 2 || got[0].Row != cur || got[1].Row != other {
		t.Errorf("a fitting variant: %+v, want it and the row of another module", got)
	}
	for _, c := range []struct{ v, fix string }{
		{"v0.38.0", "upgrade kpath, or run a version it covers"},
		{"v0.30.2", "this version is older than kpath covers"},
	} {
		got := collapseVariants([]RowStatus{outside(old, c.v), outside(cur, c.v)})
		if len(got) != 1 || got[0].State != RowNotCovered || !errors.Is(got[0].Err, ErrNotCovered) {
			t.Fatalf("%s: %+v, want one not-covered status", c.v, got)
		}
		msg := got[0].Err.Error()
		for _, want := range []string{"k8s.io/apiserver " + c.v, `">=v0.33.0 <v0.36.0", ">=v0.36.0 <v0.38.0"`, c.fix} {
			if !strings.Contains(msg, want) {
				t.Errorf("%s: %q lacks %q", c.v, msg, want)
			}
		}
	}
}
