package probes

// kube-controller-manager's controllers: a sync of one object by one
// controller, from its handler's entry to the handler's deferred "Finished
// syncing" log (the closure runs at every return of the handler, on its
// goroutine), and the object the sync read from its lister, which names
// the write it acted on (its resourceVersion) and, for a ReplicaSet, the
// Deployment that owns it. Signatures compared in the sources of v1.33.13,
// v1.34.4, v1.35.4, v1.36.3 and v1.37.2; offsets checked against the DWARF
// of each (dwarf_test.go). Three entry hits a sync, all on the push.

// Stages of a controller's sync.
const (
	StageControllerSync = "controller-sync" // one sync of one object by one kube-controller-manager controller
	// StageSyncObject is the object the sync read: its namespace, name,
	// revision and owner. It makes no span of its own.
	StageSyncObject = "controller-sync-object"
)

// Pairs of the sync spans, one per controller: a close carries nothing,
// so the pair says whose sync it ends.
const (
	PairReplicaSetSync = "replicaset-sync"
	PairDeploymentSync = "deployment-sync"
)

// Controller names as kube-controller-manager's --controllers flag spells
// them.
const (
	ControllerReplicaSet = "replicaset"
	ControllerDeployment = "deployment"
)

const (
	rsController = "k8s.io/kubernetes/pkg/controller/replicaset.(*ReplicaSetController)"
	dController  = "k8s.io/kubernetes/pkg/controller/deployment.(*DeploymentController)"
	// ReplicaSetController embeds schema.GroupVersionKind first: Kind @32
	// is ReplicaSet, or ReplicationController for the replication manager,
	// which runs the same code on ReplicationControllers.
	rsControllerKind = 32
	// ObjectMeta.OwnerReferences (a slice) in an object (TypeMeta first),
	// and OwnerReference.Name in an element of it.
	objOwnerRefs  = 0xc0
	ownerRefName  = 32
	ownerRefsSize = 80 // sizeof(metav1.OwnerReference), for the DWARF check
)

// syncObject captures the object a sync read: namespace, name, its first
// owner's name (Optional: an object without owners has no element to read)
// and its resourceVersion.
func syncObject(r Reg) []Capture {
	owner := strAt(FieldOwner, r, objOwnerRefs, ownerRefName)
	owner.Optional = true
	return append([]Capture{strAt(FieldNamespace, r, objNamespace), strAt(FieldName, r, objName), owner}, objRevision(r)...)
}

var controllerRows = []Row{
	// syncReplicaSet(ctx, key string): rsc in RAX, ctx in RBX,RCX, key
	// ("namespace/name") in RDI,RSI.
	{ID: "controller-manager.replicaset.sync", Component: KubeControllerManager, Stage: StageControllerSync,
		Role: Opens, Pair: PairReplicaSetSync, By: ByGoroutine, Controller: ControllerReplicaSet,
		Symbol: rsController + ".syncReplicaSet", Module: modKubernetes, Versions: kube133to137,
		Hits:  "once per sync of a ReplicaSet or ReplicationController (its create, each change of it or of one of its pods)",
		Entry: []Capture{str(FieldKey, RDI, RSI), strAt(FieldController, RAX, rsControllerKind)}},
	{ID: "controller-manager.replicaset.sync.done", Component: KubeControllerManager, Stage: StageControllerSync,
		Role: Closes, Pair: PairReplicaSetSync, By: ByGoroutine,
		Symbol: rsController + ".syncReplicaSet.func1", Module: modKubernetes, Versions: kube133to137,
		Hits: "once per sync of a ReplicaSet or ReplicationController"},
	// manageReplicas(ctx, activePods []*v1.Pod, rs *apps.ReplicaSet): rs
	// in R9. The only caller of pod creates and deletes, called when the
	// controller's expectations are met (nearly every sync).
	{ID: "controller-manager.replicaset.manage", Component: KubeControllerManager, Stage: StageSyncObject,
		Symbol: rsController + ".manageReplicas", Module: modKubernetes, Versions: kube133to137,
		Hits:  "once per sync of a ReplicaSet whose expectations are met",
		Entry: syncObject(R9)},

	// syncDeployment(ctx, key string): as syncReplicaSet. Its deferred log
	// is set after the key is split: a key that does not split (never one
	// the controller enqueued) ends no span.
	{ID: "controller-manager.deployment.sync", Component: KubeControllerManager, Stage: StageControllerSync,
		Role: Opens, Pair: PairDeploymentSync, By: ByGoroutine, Controller: ControllerDeployment,
		Symbol: dController + ".syncDeployment", Module: modKubernetes, Versions: kube133to137,
		Hits:  "once per sync of a Deployment (its create, each change of it or of its ReplicaSets)",
		Entry: []Capture{str(FieldKey, RDI, RSI)}},
	{ID: "controller-manager.deployment.sync.done", Component: KubeControllerManager, Stage: StageControllerSync,
		Role: Closes, Pair: PairDeploymentSync, By: ByGoroutine,
		Symbol: dController + ".syncDeployment.func1", Module: modKubernetes, Versions: kube133to137,
		Hits: "once per sync of a Deployment"},
	// getReplicaSetsForDeployment(ctx, d *apps.Deployment): d in RDI, the
	// lister's object deep-copied. Every sync of a Deployment that exists
	// calls it before acting.
	{ID: "controller-manager.deployment.object", Component: KubeControllerManager, Stage: StageSyncObject,
		Symbol: dController + ".getReplicaSetsForDeployment", Module: modKubernetes, Versions: kube133to137,
		Hits:  "once per sync of a Deployment that exists",
		Entry: syncObject(RDI)},
}
