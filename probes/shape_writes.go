package probes

import "time"

// WriteShape is how the events of one object write join into its trace,
// named by the etcd key and the revision the write made: request →
// admission webhooks → storage → storage write → etcd request → raft
// proposal, WAL fsync, apply. Every stage but the three that carry the key
// and revision is found from one that does.
var WriteShape = Shape{
	Roots:    []string{StageRequest, StageStorage, StageStorageWrite, StageEtcdRequest, StageApply},
	Required: []string{StageEtcdRequest, StageApply},
	Expects:  StageStorageWrite,
	Joins: Joins{
		// The handler runs on the parent of the goroutine that writes, and
		// its span (announced at entry) encloses the write. One request can
		// make several writes.
		{Stage: StageRequest, Found: []Relation{{Of: StageStorageWrite, When: Encloses,
			Same: []Same{{KeyGoroutine, KeyParentGoroutine}}}},
			// Its writes end before it does (the ring buffer keeps their
			// order): once ended it waits only for stragglers.
			Shared: true, Waits: true, Keep: 200 * time.Millisecond, Unjoined: "request-without-write",
			Span: "{method} {path}", Attrs: []Field{FieldMethod, FieldPath, FieldCode}, Splits: StageFilters},
		// Mutating webhooks run on the writing goroutine, validating ones
		// each on a child of it; both before the write.
		{Stage: StageAdmission, Found: []Relation{
			{Of: StageStorageWrite, When: EndsBefore, Same: []Same{{KeyGoroutine, KeyGoroutine}}},
			{Of: StageStorageWrite, When: EndsBefore, Same: []Same{{KeyParentGoroutine, KeyGoroutine}}}},
			Many: true, Under: []string{StageRequest}, Unjoined: "webhook-without-write",
			Span: "admission webhook {webhook}", Attrs: []Field{FieldWebhook, FieldWebhookType, FieldUID}},
		// A webhook server's answer, under the call it answered: the UID
		// the apiserver made for the call. Its answer comes before the
		// call's end, and the write after every call.
		// One that finds no call (the server on another node than the
		// apiserver, or a review whose write never came: denied) is a
		// trace of its own, derived from the UID, which the call links to.
		{Stage: StageWebhookServer, Found: []Relation{{Of: StageAdmission, AnyProcess: true, Same: []Same{{KeyUID, KeyUID}}}},
			Many: true, Under: []string{StageAdmission}, Keep: 10 * time.Second, Unjoined: "answer-without-write", Alone: true,
			Span: "webhook server {path}", Attrs: []Field{FieldPath}},
		// The detail storage rows: etcd3.store's call around the txn, on the
		// writing goroutine.
		{Stage: StageStorage, Found: []Relation{{Of: StageStorageWrite, When: Encloses,
			Same: []Same{{KeyGoroutine, KeyGoroutine}}}},
			Under: []string{StageRequest}, Unjoined: "storage-without-write"},
		// A failed compare (a conflict the apiserver retries) wrote nothing.
		{Stage: StageStorageWrite, Names: true, Require: wrote, Refused: "conflict",
			Under: []string{StageStorage, StageRequest}, Attrs: []Field{FieldSucceeded}},
		{Stage: StageEtcdRequest, Names: true, Require: wrote, Refused: "no-write",
			Under: []string{StageStorageWrite, StageStorage, StageRequest}},
		// The apply's Trigger hands the result back to the request: it ends
		// the apply, on the apply goroutine, before etcd answers the txn.
		{Stage: StageApplied, Found: []Relation{{Of: StageApply, When: FirstAfter, Bound: StageEtcdRequest,
			Same: []Same{{KeyGoroutine, KeyGoroutine}}}},
			// Its puts come before it: it is needed only as it comes.
			Ends: StageApply, Shared: true, Keep: 100 * time.Millisecond, Unjoined: "entry-without-write",
			Refused: "trigger-of-another-entry"},
		// The proposal registered the raft request ID its Trigger fires.
		// Without the RPC row it is where etcd's part of the write starts.
		{Stage: StagePropose, Found: []Relation{{Of: StageApplied, Same: []Same{{KeyRaftID, KeyRaftID}}}},
			Under: []string{StageEtcdRequest}, Stands: StageEtcdRequest, StandsSpan: "etcd proposal → applied", Unjoined: "proposal-without-write",
			Span: "raft propose", Attrs: []Field{FieldRaftID}},
		// The fsync that made the proposal durable: the first to start
		// after the proposal (or the request) that ended before the apply.
		{Stage: StageWALFsync, Found: []Relation{{Of: StageEtcdRequest, When: Window,
			After: []string{StagePropose, StageEtcdRequest}, Until: StageApply}},
			Shared: true, Under: []string{StageEtcdRequest}, Keep: 6 * time.Second, Unjoined: "fsync-without-write",
			Span: "wal fsync"},
		{Stage: StageApply, Names: true, Require: keyed, Refused: "keyless",
			Under: []string{StageEtcdRequest}, Attrs: []Field{FieldRaftID}},
	},
}

func wrote(e *Event) bool { return e.Succeeded && e.Key != "" }
func keyed(e *Event) bool { return e.Key != "" }
