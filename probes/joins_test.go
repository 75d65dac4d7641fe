package probes

import (
	"strings"
	"testing"
)

// Every row's events have a place: the shape of the trace its row feeds
// declares how its stage joins, and the shapes themselves are sound.
func TestEveryRowHasAJoin(t *testing.T) {
	shapes := map[Feed]*Shape{FeedsWrites: &WriteShape, FeedsPods: &PodShape, FeedsReconciles: &ReconcileShape, FeedsSyncs: &SyncShape}
	for f, s := range shapes {
		if err := s.Check(); err != nil {
			t.Errorf("feed %d: %v", f, err)
		}
	}
	for _, r := range Catalogue {
		if r.Feeds == 0 {
			t.Errorf("row %s feeds no trace", r.ID)
		}
		for f, s := range shapes {
			if r.Feeds&f != 0 && s.Joins.Of(r.Stage) == nil {
				t.Errorf("row %s: stage %q has no join in the shape of feed %d: its events would join nothing", r.ID, r.Stage, f)
			}
		}
		if r.Feeds&^(FeedsWrites|FeedsPods|FeedsReconciles|FeedsSyncs) != 0 {
			t.Errorf("row %s feeds %d, which has no shape", r.ID, r.Feeds)
		}
	}
}

func TestShapeCheckFindsMistakes(t *testing.T) {
	for want, s := range map[string]Shape{
		"not in the table":       {Joins: Joins{{Stage: "a", Found: []Relation{{Of: "b"}}}}},
		"does not come before":   {Joins: Joins{{Stage: "a", Names: true, Under: []string{"b"}}, {Stage: "b", Names: true}}},
		"neither names":          {Joins: Joins{{Stage: "a"}}},
		"a window needs":         {Joins: Joins{{Stage: "a", Names: true}, {Stage: "b", Found: []Relation{{Of: "a", When: Window}}}}},
		"listed twice":           {Joins: Joins{{Stage: "a", Names: true}, {Stage: "a", Names: true}}},
		"is not in its joins":    {Joins: Joins{{Stage: "a", Names: true}}, Required: []string{"z"}},
		"names its trace and is": {Joins: Joins{{Stage: "a", Names: true, Found: []Relation{{Of: "a"}}}}},
	} {
		err := s.Check()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want an error with %q, got %v", want, err)
		}
	}
}

func TestObjectKeyIsNamespaceAndName(t *testing.T) {
	a := &Event{Namespace: "ns", Name: "web"}
	b := &Event{Namespace: "nsw", Name: "eb"}
	if KeyObject.Value(a) == KeyObject.Value(b) {
		t.Error("ns/web and nsw/eb hash alike: the separator is missing")
	}
	if KeyObject.Value(a) != KeyObject.Value(&Event{Namespace: "ns", Name: "web", UID: "x"}) {
		t.Error("the key depends on more than namespace and name")
	}
}
