package probes

import "time"

// The pod's writes as the pod trace sees them: the create and every later
// write of the pod (binding, status), each a finished write trace.
const (
	StagePodCreate = "pod-create"
	StagePodWrite  = "pod-write"
)

// PodShape is how the events of one pod's way to Running join into its
// trace, named by the pod's UID. The pod's writes carry no UID: the create
// is found from a consumer's receipt of the pod at the create's revision,
// the later writes from the create by name, at later revisions.
var PodShape = Shape{
	Joins: Joins{
		// A pod is followed from when it reaches a scheduler or a node, not
		// from a relist of a pod long running: a receipt opens its trace
		// only at the kubelet, or when it finds the pod's create.
		{Stage: StageSchedulerQueue, Names: true, Many: true, Late: true, Require: hasUID, Refused: "no-uid",
			Opens: never, Keep: 30 * time.Second, Unjoined: "orphan"},
		{Stage: StageInformer, Names: true, Many: true, Late: true, Require: hasUID, Refused: "no-uid",
			Opens: func(e *Event) bool { return e.Component == Kubelet }, Keep: 30 * time.Second, Unjoined: "orphan"},
		{Stage: StageSchedule, Names: true, Many: true, Require: hasUID, Refused: "no-uid"},
		{Stage: StageBind, Names: true, Many: true, Require: hasUID, Refused: "no-uid",
			Opens: never, Keep: 30 * time.Second, Unjoined: "orphan"},
		{Stage: StagePodSync, Names: true, Many: true, Require: hasUID, Refused: "no-uid",
			Opens: never, Keep: 30 * time.Second, Unjoined: "orphan"},
		{Stage: StageSandbox, Names: true, Many: true, Require: hasUID, Refused: "no-uid"},
		{Stage: StageContainerStart, Names: true, Many: true, Require: hasUID, Refused: "no-uid",
			Opens: never, Keep: 30 * time.Second, Unjoined: "orphan"},
		{Stage: StageStatusSet, Names: true, Many: true, Require: hasUID, Refused: "no-uid",
			Opens: never, Keep: 30 * time.Second, Unjoined: "orphan"},
		{Stage: StageStatusWrite, Names: true, Many: true, Require: hasUID, Refused: "no-uid",
			Opens: never, Keep: 30 * time.Second, Unjoined: "orphan"},
		// The watch cache's event has no consumer of its own: the lags are
		// measured at the reflectors. Kept for what follows the pod.
		{Stage: StageWatchCache, Names: true, Many: true, Require: hasUID, Refused: "no-uid",
			Opens: never, Keep: 30 * time.Second, Unjoined: "orphan"},
		{Stage: StagePodCreate, Found: []Relation{
			{Of: StageSchedulerQueue, AnyProcess: true, Same: []Same{{KeyObject, KeyObject}, {KeyRevision, KeyRevision}}},
			{Of: StageInformer, AnyProcess: true, Same: []Same{{KeyObject, KeyObject}, {KeyRevision, KeyRevision}}}},
			Anchors: true, Keep: 5 * time.Minute, Unjoined: "write-of-a-pod-not-followed"},
		{Stage: StagePodWrite, Found: []Relation{
			{Of: StagePodCreate, AnyProcess: true, When: RevisionAfter, Same: []Same{{KeyObject, KeyObject}}}},
			Many: true, Keep: 5 * time.Minute, Unjoined: "write-of-a-pod-not-followed"},
	},
}

func hasUID(e *Event) bool { return e.UID != "" }
func never(*Event) bool    { return false }
