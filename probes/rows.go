package probes

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
// Hit budget (README): a plain write costs 4 hits in kube-apiserver (request
// entry+RET, etcd txn entry+RET); each webhook call adds 2. etcd adds 3, all
// entries (the cheap kind, see Binary.EntrySite): the proposal's Register,
// the apply's put and its Trigger. The gRPC Txn span (an entry and a costly
// RET) and the WAL fsync are detail rows.

const (
	modAPIServer  = "k8s.io/apiserver"
	modEtcdClient = "go.etcd.io/etcd/client/v3"
	modEtcdServer = "go.etcd.io/etcd/server/v3"
	modEtcdPkg    = "go.etcd.io/etcd/pkg/v3"

	k8s133to137  = ">=v0.33.0 <v0.38.0"
	k8s133to136  = ">=v0.33.0 <v0.37.0"
	k8s137       = ">=v0.37.0 <v0.38.0"
	etcd36       = ">=v3.6.0 <v3.7.0"
	etcdClient35 = ">=v3.5.0 <v3.8.0"
)

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
)

// *http.Request: Method string @0, URL *url.URL @16; url.URL.Path @56.
var (
	httpMethod = func(r Reg) Capture { return strAt(FieldMethod, r, 0) }
	httpPath   = func(r Reg) Capture { return strAt(FieldPath, r, 16, 56) }
)

// writeRows follow one object write through kube-apiserver and etcd.
var writeRows = []Row{
	// kube-apiserver: one handler closure per verb; the closure receives
	// (w http.ResponseWriter, req *http.Request): w in RAX,RBX, req in RCX.
	{ID: "apiserver.request.create", Component: KubeAPIServer, Stage: StageRequest, Timed: true, Announce: true,
		Symbol: "k8s.io/apiserver/pkg/endpoints/handlers.CreateResource.createHandler.func1",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per POST",
		Entry: []Capture{httpMethod(RCX), httpPath(RCX)}},
	{ID: "apiserver.request.create-named", Component: KubeAPIServer, Stage: StageRequest, Timed: true, Announce: true,
		Symbol: "k8s.io/apiserver/pkg/endpoints/handlers.CreateNamedResource.createHandler.func1",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per POST to a named subresource (binding, eviction)",
		Entry: []Capture{httpMethod(RCX), httpPath(RCX)}},
	{ID: "apiserver.request.update", Component: KubeAPIServer, Stage: StageRequest, Timed: true, Announce: true,
		Symbol: "k8s.io/apiserver/pkg/endpoints/handlers.UpdateResource.func1",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per PUT",
		Entry: []Capture{httpMethod(RCX), httpPath(RCX)}},
	{ID: "apiserver.request.patch", Component: KubeAPIServer, Stage: StageRequest, Timed: true, Announce: true,
		Symbol: "k8s.io/apiserver/pkg/endpoints/handlers.PatchResource.func1",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per PATCH",
		Entry: []Capture{httpMethod(RCX), httpPath(RCX)}},
	{ID: "apiserver.request.delete", Component: KubeAPIServer, Stage: StageRequest, Timed: true, Announce: true,
		Symbol: "k8s.io/apiserver/pkg/endpoints/handlers.DeleteResource.func1",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per DELETE",
		Entry: []Capture{httpMethod(RCX), httpPath(RCX)}},

	// Admission webhooks: the webhook (Name @0) in RDI, the versioned
	// attributes in R8 with VersionedObject's data pointer → ObjectMeta. Up
	// to v0.36 VersionedObject is a runtime.Object @32 (data @40); v0.37 made
	// both versioned objects a LazyObject (object, a bool, a cel ref.Val: 40
	// bytes), so VersionedObject.object is @56 (data @64).
	webhookRow("apiserver.webhook.mutating", "k8s.io/apiserver/pkg/admission/plugin/webhook/mutating.(*mutatingDispatcher).callAttrMutatingHook",
		k8s133to136, 40, "once per matching mutating webhook per request"),
	webhookRow("apiserver.webhook.mutating", "k8s.io/apiserver/pkg/admission/plugin/webhook/mutating.(*mutatingDispatcher).callAttrMutatingHook",
		k8s137, 64, "once per matching mutating webhook per request"),
	webhookRow("apiserver.webhook.validating", "k8s.io/apiserver/pkg/admission/plugin/webhook/validating.(*validatingDispatcher).callHook",
		k8s133to136, 40, "once per matching validating webhook per request (each on its own goroutine)"),
	webhookRow("apiserver.webhook.validating", "k8s.io/apiserver/pkg/admission/plugin/webhook/validating.(*validatingDispatcher).callHook",
		k8s137, 64, "once per matching validating webhook per request (each on its own goroutine)"),

	// The storage layer (key without the /registry prefix): detail only,
	// since the etcd txn below already times the write.
	{ID: "apiserver.storage.create", Component: KubeAPIServer, Stage: StageStorage, Timed: true, Detail: true,
		Symbol: "k8s.io/apiserver/pkg/storage/etcd3.(*store).Create",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per create",
		Entry: []Capture{str(FieldKey, RDI, RSI)}},
	{ID: "apiserver.storage.update", Component: KubeAPIServer, Stage: StageStorage, Timed: true, Detail: true,
		Symbol: "k8s.io/apiserver/pkg/storage/etcd3.(*store).GuaranteedUpdate",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per update, patch or graceful delete",
		Entry: []Capture{str(FieldKey, RDI, RSI)}},
	{ID: "apiserver.storage.delete", Component: KubeAPIServer, Stage: StageStorage, Timed: true, Detail: true,
		Symbol: "k8s.io/apiserver/pkg/storage/etcd3.(*store).Delete",
		Module: modAPIServer, Versions: k8s133to137, Hits: "once per delete",
		Entry: []Capture{str(FieldKey, RDI, RSI)}},

	// The etcd txn the apiserver issues. Value receiver Client in RAX,RBX,RCX,
	// ctx in RDI,RSI, the full etcd key in R8,R9. The results PutResponse /
	// DeleteResponse {KV, Succeeded, Revision} are in RAX,RBX,RCX at a RET.
	{ID: "apiserver.etcd.put", Component: KubeAPIServer, Stage: StageStorageWrite, Timed: true,
		Symbol: "go.etcd.io/etcd/client/v3/kubernetes.Client.OptimisticPut",
		Module: modEtcdClient, Versions: etcdClient35, Hits: "once per create/update attempt",
		Entry: []Capture{str(FieldKey, R8, R9)},
		Exit:  []Capture{boolean(FieldSucceeded, RBX), u64(FieldRevision, RCX)}},
	{ID: "apiserver.etcd.delete", Component: KubeAPIServer, Stage: StageStorageWrite, Timed: true,
		Symbol: "go.etcd.io/etcd/client/v3/kubernetes.Client.OptimisticDelete",
		Module: modEtcdClient, Versions: etcdClient35, Hits: "once per delete attempt",
		Entry: []Capture{str(FieldKey, R8, R9)},
		Exit:  []Capture{boolean(FieldSucceeded, RBX), u64(FieldRevision, RCX)}},

	// etcd, the gRPC request: *TxnRequest in RDI, Compare []*Compare @0,
	// Compare.Key @8; at a RET *TxnResponse in RAX: Header @0 (Revision
	// @16), Succeeded @8. Detail: by default etcd's part of a write runs
	// from its proposal to its Trigger (below), with no RET to pay for.
	{ID: "etcd.request.txn", Component: Etcd, Stage: StageEtcdRequest, Timed: true, Detail: true,
		Symbol: "go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc.(*kvServer).Txn",
		Module: modEtcdServer, Versions: etcd36, Hits: "once per txn (every apiserver write)",
		Entry: []Capture{strAt(FieldKey, RDI, 0, 0, 8)},
		Exit:  []Capture{u64At(FieldRevision, RAX, 0, 16), boolAt(FieldSucceeded, RAX, 8)}},
	{ID: "etcd.request.put", Component: Etcd, Stage: StageEtcdRequest, Timed: true, Detail: true,
		Symbol: "go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc.(*kvServer).Put",
		Module: modEtcdServer, Versions: etcd36, Hits: "once per plain put (etcdctl, not the apiserver)",
		Entry: []Capture{strAt(FieldKey, RDI, 0)},
		Exit:  []Capture{u64At(FieldRevision, RAX, 0, 16)}},
	// The raft request ID is registered on the request goroutine just
	// before the proposal; Trigger hands the apply result back under it.
	// Register → Trigger is etcd's part of the write, joined exactly by the
	// ID, whatever the request (Txn, Put, from any client).
	{ID: "etcd.raft.propose", Component: Etcd, Stage: StagePropose,
		Symbol: "go.etcd.io/etcd/pkg/v3/wait.(*list).Register",
		Module: modEtcdPkg, Versions: etcd36, Hits: "once per proposal (every write, lease grant, compaction, ...)",
		Entry: []Capture{u64(FieldRaftID, RBX)}},
	// Detail: its two hits come per raft batch, which on a quiet cluster
	// is per write; the etcd request span already holds the commit.
	{ID: "etcd.wal.fsync", Component: Etcd, Stage: StageWALFsync, Timed: true, Detail: true,
		Symbol: "go.etcd.io/etcd/server/v3/storage/wal.(*WAL).sync",
		Module: modEtcdServer, Versions: etcd36, Hits: "once per raft batch"},
	// Apply: tw in RAX (beginRev @64; the write lands at beginRev+1), key in
	// RBX,RCX.
	{ID: "etcd.apply.put", Component: Etcd, Stage: StageApply,
		Symbol: "go.etcd.io/etcd/server/v3/storage/mvcc.(*storeTxnWrite).put",
		Module: modEtcdServer, Versions: etcd36, Hits: "once per key written",
		Entry: []Capture{str(FieldKey, RBX, RCX), withAdd(u64At(FieldRevision, RAX, 64), 1)}},
	{ID: "etcd.apply.delete", Component: Etcd, Stage: StageApply,
		Symbol: "go.etcd.io/etcd/server/v3/storage/mvcc.(*storeTxnWrite).delete",
		Module: modEtcdServer, Versions: etcd36, Hits: "once per key deleted",
		Entry: []Capture{str(FieldKey, RBX, RCX), withAdd(u64At(FieldRevision, RAX, 64), 1)}},
	// It ends the apply and etcd's part of the write: the result goes back
	// to the request goroutine registered under the same raft ID.
	{ID: "etcd.apply.done", Component: Etcd, Stage: StageApplied,
		Symbol: "go.etcd.io/etcd/pkg/v3/wait.(*list).Trigger",
		Module: modEtcdPkg, Versions: etcd36, Hits: "once per applied entry with a waiter",
		Entry: []Capture{u64(FieldRaftID, RBX)}},
}

func withAdd(c Capture, n int64) Capture { c.Add = n; return c }

// webhookRow is one admission webhook call: the webhook in RDI (Name @0),
// the versioned attributes in R8, whose VersionedObject data word is at obj.
func webhookRow(id, symbol, versions string, obj uint32, hits string) Row {
	return Row{ID: id, Component: KubeAPIServer, Stage: StageAdmission, Timed: true,
		Symbol: symbol, Module: modAPIServer, Versions: versions, Hits: hits,
		Entry: []Capture{strAt(FieldWebhook, RDI, 0), strAt(FieldNamespace, R8, obj, objNamespace), strAt(FieldName, R8, obj, objName)}}
}
