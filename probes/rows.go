package probes

import "slices"

// The catalogue. Registers and offsets were read from the DWARF of the lab
// builds (Kubernetes v1.35.4, etcd v3.6.16) and checked against stripped
// release-style builds of the same versions; see docs/probe-points.md for
// sources, frequencies and what differs in other versions. A version range
// covers only versions whose signatures and layouts were compared: the
// staging modules v0.33–v0.37 (k8s.io/apiserver, client-go, cri-client) and
// the etcd client v3.5–v3.7 have the same functions, arguments and structs
// for these rows (sources of v0.33.13, v0.34.4, v0.36.3, v0.37.2; etcd client
// v3.6.8 and v3.7.0). Where a version changed a signature, the row has a
// variant with the same ID and another range.
//
// Hit budget (README): a plain write costs 4 hits in kube-apiserver, all
// entries of the cheap kind (Binary.EntrySite; a CALL site costs the same):
// the handler's entry and MonitorRequest, which ends the request and says
// when it was received; the etcd txn's entry and the CALL of
// RecordEtcdRequest after it, where the txn's result is read from the
// caller's frame. Each webhook call adds 2. etcd adds 3, all entries: its
// gRPC stats (logUnaryRequestStats, which holds the RPC's start, key and
// result), the apply's put and its Trigger. No default row has a RET: a RET
// is single-stepped, 21–24 µs a hit here against 0.75 µs. The timed rows
// left (the storage layer, the gRPC Txn span, the WAL fsync) are detail.

const (
	modAPIServer  = "k8s.io/apiserver"
	modEtcdClient = "go.etcd.io/etcd/client/v3"
	modEtcdServer = "go.etcd.io/etcd/server/v3"
	modEtcdPkg    = "go.etcd.io/etcd/pkg/v3"

	k8s133to137  = ">=v0.33.0 <v0.38.0"
	etcd35       = ">=v3.5.0 <v3.6.0"
	etcd36       = ">=v3.6.0 <v3.7.0"
	etcd37       = ">=v3.7.0 <v3.8.0"
	etcd35to37   = ">=v3.5.0 <v3.8.0" // rows whose functions, registers and layouts did not change
	etcdClient35 = ">=v3.5.0 <v3.8.0"
)

// etcdRelease is what etcd's rows read differently from one minor to the
// next, each checked against the DWARF of a normal build (v3.5.35, v3.6.16,
// v3.7.3; TestOffsetsAgreeWithDWARF) and live (make test-versions).
type etcdRelease struct {
	versions string
	etcdMessages
	// logUnaryRequestStats(ctx, lg, [warnLatency,] info, startTime, req,
	// resp): v3.6 added warnLatency before info, which moves info and
	// startTime one register on and req onto the stack.
	info, startWall, startExt Reg
	req, resp                 argWord // the data word of each interface
	// mvcc and wal moved under storage/ in v3.6.
	storage string
}

// argWord is where an argument word is at a function's entry: in Reg, or,
// with At, in memory at Reg+At[0] (the stack, from RSP).
type argWord struct {
	reg Reg
	at  []uint32
}

// path is the capture path through the word, then on through the fields.
func (a argWord) path(fields ...uint32) []uint32 { return slices.Concat(a.at, fields) }

// etcdMessages is where etcd's generated request and response types keep
// the fields the RPC rows read. Up to v3.6 they are gogo/protobuf structs,
// fields first; v3.7 moved to google.golang.org/protobuf, whose structs
// begin with an 8-byte MessageState.
type etcdMessages struct {
	// TxnRequest.Compare, Compare.Key, TxnResponse.Header and .Succeeded,
	// ResponseHeader.Revision, PutRequest.Key, PutResponse.Header.
	txnCompare, compareKey, txnHeader, txnSucceeded, headerRevision, putKey, putHeader uint32
}

var (
	gogoMessages     = etcdMessages{txnCompare: 0, compareKey: 8, txnHeader: 0, txnSucceeded: 8, headerRevision: 16, putKey: 0, putHeader: 0}
	protobufMessages = etcdMessages{txnCompare: 8, compareKey: 16, txnHeader: 8, txnSucceeded: 16, headerRevision: 24, putKey: 8, putHeader: 8}

	// v3.5: info in RDI, startTime in RSI,R8,R9, req in R10,R11 and resp
	// on the stack (type @8, data @16).
	etcdV35 = etcdRelease{versions: etcd35, etcdMessages: gogoMessages,
		info: RDI, startWall: RSI, startExt: R8, req: argWord{R11, nil}, resp: argWord{RSP, []uint32{16}},
		storage: "go.etcd.io/etcd/server/v3/"}
	// v3.6 and v3.7: info in RSI, startTime in R8,R9,R10, req and resp on
	// the stack (type @8, data @16; type @24, data @32).
	etcdV36 = etcdRelease{versions: etcd36, etcdMessages: gogoMessages,
		info: RSI, startWall: R8, startExt: R9, req: argWord{RSP, []uint32{16}}, resp: argWord{RSP, []uint32{32}},
		storage: "go.etcd.io/etcd/server/v3/storage/"}
	etcdV37 = func() etcdRelease {
		r := etcdV36
		r.versions, r.etcdMessages = etcd37, protobufMessages
		return r
	}()
	etcdReleases = []etcdRelease{etcdV35, etcdV36, etcdV37}
)

// etcdRequestRows are etcd's RPC rows for one release.
func etcdRequestRows(m etcdRelease) []Row {
	return []Row{
		// etcd's side of every unary RPC: the logging interceptor defers
		// logUnaryRequestStats to the handler's end, on its goroutine: one
		// entry hit holds the whole RPC. From info (FullMethod @16), the
		// start time's wall and ext words, *TxnRequest req: Compare → [0] →
		// Key, *TxnResponse resp: Header → Revision, and Succeeded. Only
		// Txn calls are kept: the others have other layouts, and writes from
		// the apiserver are all Txn (the BPF program drops the rest before
		// the ring buffer).
		{ID: "etcd.request.rpc", Span: "etcd Txn", Component: Etcd, Stage: StageEtcdRequest,
			Symbol: "go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc.logUnaryRequestStats",
			Module: modEtcdServer, Versions: m.versions, Hits: "once per unary RPC (every txn, range, lease grant, ...)",
			Only: &Match{FieldMethod, []string{"/etcdserverpb.KV/Txn"}},
			Entry: []Capture{strAt(FieldMethod, m.info, 16), strAt(FieldKey, m.req.reg, m.req.path(m.txnCompare, 0, m.compareKey)...),
				u64At(FieldRevision, m.resp.reg, m.resp.path(m.txnHeader, m.headerRevision)...),
				boolAt(FieldSucceeded, m.resp.reg, m.resp.path(m.txnSucceeded)...),
				u64(FieldBeginWall, m.startWall), u64(FieldBeginExt, m.startExt)}},

		// etcd, the gRPC request: *TxnRequest in RDI; at a RET *TxnResponse
		// in RAX. Detail: the RPC stats above hold the whole request, with no
		// RET to pay for.
		{ID: "etcd.request.txn", Span: "etcd txn", Component: Etcd, Stage: StageEtcdRequest, Timed: true, Detail: true,
			Symbol: "go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc.(*kvServer).Txn",
			Module: modEtcdServer, Versions: m.versions, Hits: "once per txn (every apiserver write)",
			Entry: []Capture{strAt(FieldKey, RDI, m.txnCompare, 0, m.compareKey)},
			Exit:  []Capture{u64At(FieldRevision, RAX, m.txnHeader, m.headerRevision), boolAt(FieldSucceeded, RAX, m.txnSucceeded)}},
		{ID: "etcd.request.put", Span: "etcd put", Component: Etcd, Stage: StageEtcdRequest, Timed: true, Detail: true,
			Symbol: "go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc.(*kvServer).Put",
			Module: modEtcdServer, Versions: m.versions, Hits: "once per plain put (etcdctl, not the apiserver)",
			Entry: []Capture{strAt(FieldKey, RDI, m.putKey)},
			Exit:  []Capture{u64At(FieldRevision, RAX, m.putHeader, m.headerRevision)}},
	}
}

// etcdStorageRows are etcd's WAL and apply rows for one release (their
// package moved in v3.6; functions, registers and layouts did not change).
func etcdStorageRows(m etcdRelease) []Row {
	return []Row{
		// Detail: its two hits come per raft batch, which on a quiet cluster
		// is per write; the etcd request span already holds the commit.
		{ID: "etcd.wal.fsync", Span: "wal fsync", Component: Etcd, Stage: StageWALFsync, Timed: true, Detail: true,
			Symbol: m.storage + "wal.(*WAL).sync",
			Module: modEtcdServer, Versions: m.versions, Hits: "once per raft batch"},
		// Apply: tw in RAX (beginRev @64; the write lands at beginRev+1), key in
		// RBX,RCX.
		{ID: "etcd.apply.put", Span: "apply put", Component: Etcd, Stage: StageApply,
			Symbol: m.storage + "mvcc.(*storeTxnWrite).put",
			Module: modEtcdServer, Versions: m.versions, Hits: "once per key written",
			Entry: []Capture{str(FieldKey, RBX, RCX), withAdd(u64At(FieldRevision, RAX, txnWriteBeginRev), 1)}},
		{ID: "etcd.apply.delete", Span: "apply delete", Component: Etcd, Stage: StageApply,
			Symbol: m.storage + "mvcc.(*storeTxnWrite).delete",
			Module: modEtcdServer, Versions: m.versions, Hits: "once per key deleted",
			Entry: []Capture{str(FieldKey, RBX, RCX), withAdd(u64At(FieldRevision, RAX, txnWriteBeginRev), 1)}},
	}
}

// storeTxnWrite.beginRev, in every release v3.5–v3.7.
const txnWriteBeginRev = 64

// etcdRows are the rows of every etcd release, each with its range.
func etcdRows(f func(etcdRelease) []Row) []Row {
	var out []Row
	for _, r := range etcdReleases {
		out = append(out, f(r)...)
	}
	return out
}

// Stages: the values of kpath.stage.
const (
	StageRequest      = "request"
	StageAdmission    = "admission-webhook"
	StageStorage      = "storage"
	StageStorageWrite = "storage-write"
	StageEtcdRequest  = "etcd-request"
	StagePropose      = "raft-propose"
	StageWALFsync     = "wal-fsync"
	StageApply        = "apply"
	StageApplied      = "applied"
	// StageFilters is the part of a request before its handler: the
	// apiserver's filters (authentication, audit, priority and fairness
	// queueing, authorization), from its receipt.
	StageFilters = "filters"
)

// Pairs: the spans built from two entry hits (Row.Pair).
const (
	PairRequest      = "request"
	PairStorageWrite = "storage-write"
	PairWebhook      = "webhook-call"
	PairCycle        = "scheduling-cycle"
	PairSandbox      = "sandbox"
	PairContainer    = "container-start"
)

// *http.Request: Method string @0, URL *url.URL @16; url.URL.Path @56.
var (
	httpMethod = func(r Reg) Capture { return strAt(FieldMethod, r, 0) }
	httpPath   = func(r Reg) Capture { return strAt(FieldPath, r, 16, 56) }
)

// writeRows follow one object write through kube-apiserver and etcd.
var writeRows = slices.Concat(writeRowsFixed, etcdRows(etcdRequestRows), etcdRows(etcdStorageRows))

var writeRowsFixed = []Row{
	// kube-apiserver: one handler closure per verb; the closure receives
	// (w http.ResponseWriter, req *http.Request): w in RAX,RBX, req in RCX.
	// Its entry opens the request span, announced so that the writes made
	// inside wait for its end; MonitorRequest below closes it.
	requestRow("apiserver.request.create", "k8s.io/apiserver/pkg/endpoints/handlers.CreateResource.createHandler.func1", "once per POST"),
	requestRow("apiserver.request.create-named", "k8s.io/apiserver/pkg/endpoints/handlers.CreateNamedResource.createHandler.func1",
		"once per POST to a named subresource (binding, eviction)"),
	requestRow("apiserver.request.update", "k8s.io/apiserver/pkg/endpoints/handlers.UpdateResource.func1", "once per PUT"),
	requestRow("apiserver.request.patch", "k8s.io/apiserver/pkg/endpoints/handlers.PatchResource.func1", "once per PATCH"),
	requestRow("apiserver.request.delete", "k8s.io/apiserver/pkg/endpoints/handlers.DeleteResource.func1", "once per DELETE"),
	// Custom resources: apiextensions-apiserver's crdHandler makes the same
	// handler closures per request, inlined, so the compiler numbers them
	// after it ({n}: the one such closure of the binary).
	requestRow("apiserver.request.cr-create", crdServe+"serveResource.CreateResource.createHandler.func{n}", "once per POST of a custom resource"),
	requestRow("apiserver.request.cr-update", crdServe+"serveResource.UpdateResource.func{n}", "once per PUT of a custom resource"),
	requestRow("apiserver.request.cr-patch", crdServe+"serveResource.PatchResource.func{n}", "once per PATCH of a custom resource"),
	requestRow("apiserver.request.cr-delete", crdServe+"serveResource.DeleteResource.func{n}", "once per DELETE of a custom resource"),
	requestRow("apiserver.request.cr-status-update", crdServe+"serveStatus.UpdateResource.func{n}", "once per PUT of a custom resource's status"),
	requestRow("apiserver.request.cr-status-patch", crdServe+"serveStatus.PatchResource.func{n}", "once per PATCH of a custom resource's status"),
	requestRow("apiserver.request.cr-scale-update", crdServe+"serveScale.UpdateResource.func{n}", "once per PUT of a custom resource's scale"),
	requestRow("apiserver.request.cr-scale-patch", crdServe+"serveScale.PatchResource.func{n}", "once per PATCH of a custom resource's scale"),
	// MonitorRequest(req, verb, group, version, resource, subresource, scope,
	// component string, deprecated bool, removedRelease string, httpCode,
	// respSize int, elapsed time.Duration) runs on the handler's goroutine
	// after the route returned: it ends the request, and elapsed (since the
	// request's receipt, what apiserver_request_duration_seconds observes)
	// says when it began. verb in RBX,RCX; on the stack subresource @8,
	// httpCode @80, elapsed @96. Reads, watches and non-resource requests
	// end here too: the BPF program keeps the write verbs only (verb is
	// the route's HTTP verb: POST, PUT, PATCH, DELETE; reads are GET, LIST,
	// WATCH, ...), so a read costs its hit and no more (counted filtered).
	// req in RAX is the *http.Request the handler got: it pairs the two
	// ends exactly, however late the hit comes after elapsed was read.
	{ID: "apiserver.request.end", Component: KubeAPIServer, Stage: StageRequest,
		Role: Closes, Pair: PairRequest, By: ByGoroutine,
		Symbol: "k8s.io/apiserver/pkg/endpoints/metrics.MonitorRequest",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per request of any verb (reads and watches too)",
		// The verb as the route gives it: the HTTP method for built-in
		// resources, the API verb in capitals for custom resources
		// (crdHandler: CREATE, UPDATE; PATCH and DELETE alike).
		Only: &Match{FieldVerb, []string{"POST", "PUT", "PATCH", "DELETE", "CREATE", "UPDATE"}},
		Entry: []Capture{str(FieldVerb, RBX, RCX), strAt(FieldSubresource, RSP, 8), u64At(FieldCode, RSP, 80), u64At(FieldElapsed, RSP, 96),
			u64(FieldHandle, RAX)}},

	// Admission webhooks, mutating and validating: the dispatcher calls
	// ObserveWebhook(ctx, name, elapsed, rejected, attr, stepType, code)
	// right after each call, on the goroutine that made it: one entry hit
	// holds the call. name in RDI,RSI, elapsed in R8, on the stack stepType
	// @8 (admit, validating) and the HTTP code @24. Before the call, on the
	// same goroutine, the AdmissionReview is made with a fresh UID (in
	// RAX,RBX): the webhook server answers under it, and its own span joins
	// the call's by it. Without the review (a call that failed before it),
	// ObserveWebhook's hit is the call's span alone.
	webhookReviewRow("apiserver.webhook.review", "CreateV1AdmissionReview"),
	webhookReviewRow("apiserver.webhook.review-v1beta1", "CreateV1beta1AdmissionReview"),
	{ID: "apiserver.webhook", Component: KubeAPIServer, Stage: StageAdmission,
		Role: Closes, Pair: PairWebhook, By: ByGoroutine, Alone: true,
		Symbol: "k8s.io/apiserver/pkg/admission/metrics.(*AdmissionMetrics).ObserveWebhook",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per webhook called (mutating on the request's storage goroutine, validating each on its own)",
		Entry: []Capture{str(FieldWebhook, RDI, RSI), u64(FieldElapsed, R8), strAt(FieldWebhookType, RSP, 8), u64At(FieldCode, RSP, 24)}},

	// The storage layer (key without the /registry prefix): detail only,
	// since the etcd txn below already times the write.
	{ID: "apiserver.storage.create", Span: "storage create", Component: KubeAPIServer, Stage: StageStorage, Timed: true, Detail: true,
		Symbol: "k8s.io/apiserver/pkg/storage/etcd3.(*store).Create",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per create",
		Entry: []Capture{str(FieldKey, RDI, RSI)}},
	{ID: "apiserver.storage.update", Span: "storage update", Component: KubeAPIServer, Stage: StageStorage, Timed: true, Detail: true,
		Symbol: "k8s.io/apiserver/pkg/storage/etcd3.(*store).GuaranteedUpdate",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per update, patch or graceful delete",
		Entry: []Capture{str(FieldKey, RDI, RSI)}},
	{ID: "apiserver.storage.delete", Span: "storage delete", Component: KubeAPIServer, Stage: StageStorage, Timed: true, Detail: true,
		Symbol: "k8s.io/apiserver/pkg/storage/etcd3.(*store).Delete",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per delete",
		Entry: []Capture{str(FieldKey, RDI, RSI)}},

	// The etcd txn the apiserver issues. Value receiver Client in RAX,RBX,RCX,
	// ctx in RDI,RSI, the full etcd key in R8,R9. Its entry opens the
	// storage write; the CALL of RecordEtcdRequest after it closes it.
	{ID: "apiserver.etcd.put", Span: "etcd txn put", Component: KubeAPIServer, Stage: StageStorageWrite,
		Role: Opens, Pair: PairStorageWrite, By: ByGoroutine,
		Symbol: "go.etcd.io/etcd/client/v3/kubernetes.Client.OptimisticPut",
		Module: modEtcdClient, Versions: etcdClient35, Hits: "once per create/update attempt",
		Entry: []Capture{str(FieldKey, R8, R9)}},
	{ID: "apiserver.etcd.delete", Span: "etcd txn delete", Component: KubeAPIServer, Stage: StageStorageWrite,
		Role: Opens, Pair: PairStorageWrite, By: ByGoroutine,
		Symbol: "go.etcd.io/etcd/client/v3/kubernetes.Client.OptimisticDelete",
		Module: modEtcdClient, Versions: etcdClient35, Hits: "once per delete attempt",
		Entry: []Capture{str(FieldKey, R8, R9)}},
	// The store calls RecordEtcdRequest(verb, groupResource, err, startTime)
	// right after each txn, on the same goroutine. The CALLs that pass a
	// write verb are probed, not the function (it also follows every read
	// from etcd). The txn's results {KV, Succeeded, Revision} and its error
	// came back in RAX,RBX,RCX and RDI,RSI, and the store saved Succeeded,
	// Revision and the error's type word in its frame, since it uses them
	// after this call: Attach finds the slots in the store's code.
	{ID: "apiserver.etcd.done", Span: "etcd txn done", Component: KubeAPIServer, Stage: StageStorageWrite,
		Role: Closes, Pair: PairStorageWrite, By: ByGoroutine,
		Symbol:     "k8s.io/apiserver/pkg/storage/etcd3/metrics.RecordEtcdRequest",
		CalledFrom: []string{storeFn + "Create", storeFn + "GuaranteedUpdate", storeFn + "conditionalDelete"},
		CallArg:    []string{"create", "update", "delete"},
		Module:     modAPIServer, Versions: k8s133to137, Hits: "once per create/update/delete txn",
		Entry: []Capture{spilled(FieldSucceeded, RBX, 1), spilled(FieldRevision, RCX, 8), spilled(FieldFailed, RDI, 8)}},

	// The raft request ID is registered on the request goroutine just
	// before the proposal; Trigger hands the apply result back under it.
	// Register → Trigger is etcd's part of the write, joined exactly by the
	// ID, whatever the request (Txn, Put, from any client).
	// Detail: etcd's RPC stats above hold the whole request.
	{ID: "etcd.raft.propose", Component: Etcd, Stage: StagePropose, Detail: true,
		Symbol: "go.etcd.io/etcd/pkg/v3/wait.(*list).Register",
		Module: modEtcdPkg, Versions: etcd35to37, Hits: "once per proposal (every write, lease grant, compaction, ...)",
		Entry: []Capture{u64(FieldRaftID, RBX)}},
	// Trigger ends the apply (the per-release put and delete rows,
	// etcdStorageRows) and etcd's part of the write: the result goes back
	// to the request goroutine registered under the same raft ID.
	{ID: "etcd.apply.done", Component: Etcd, Stage: StageApplied,
		Symbol: "go.etcd.io/etcd/pkg/v3/wait.(*list).Trigger",
		Module: modEtcdPkg, Versions: etcd35to37, Hits: "once per applied entry with a waiter",
		Entry: []Capture{u64(FieldRaftID, RBX)}},
}

const storeFn = "k8s.io/apiserver/pkg/storage/etcd3.(*store)."

const crdServe = "k8s.io/apiextensions-apiserver/pkg/apiserver.(*crdHandler)."

func withAdd(c Capture, n int64) Capture { c.Add = n; return c }

// webhookReviewRow is the making of one webhook call's AdmissionReview
// (fn's uid argument): it opens the call's span.
func webhookReviewRow(id, fn string) Row {
	return Row{ID: id, Component: KubeAPIServer, Stage: StageAdmission,
		Role: Opens, Pair: PairWebhook, By: ByGoroutine,
		Symbol: "k8s.io/apiserver/pkg/admission/plugin/webhook/request." + fn,
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per webhook call (its AdmissionReview version's row)",
		Entry: []Capture{str(FieldUID, RAX, RBX)}}
}

// requestRow is one verb's handler: its entry opens the request span.
func requestRow(id, symbol, hits string) Row {
	return Row{ID: id, Component: KubeAPIServer, Stage: StageRequest, Announce: true,
		Role: Opens, Pair: PairRequest, By: ByGoroutine,
		Symbol: symbol, Module: modAPIServer, Versions: k8s133to137, Hits: hits,
		Entry: []Capture{httpMethod(RCX), httpPath(RCX), u64(FieldHandle, RCX)}}
}
