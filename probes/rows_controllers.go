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

// Controller is one of kube-controller-manager's controllers whose syncs
// kpath follows: the kind it syncs (as an ownerReference names it), where
// that kind's writes are stored, and the functions its rows probe. A
// controller is a line here; its three rows are made from it.
type Controller struct {
	Name   string // as --controllers spells it; the sync's pair and span name
	Kind   string // the kind it syncs, as its objects' owner references name it
	Prefix string // the storage prefix of that kind's writes
	// OwnedBy is the controller whose objects own this one's (a
	// ReplicaSet's Deployment): the sync that made an owner's write.
	OwnedBy string
	// Handler is the sync handler, handler(ctx, key string) with the key
	// in RDI,RSI; it defers a "Finished syncing" log first, its func1.
	Handler string
	// Object is the function handed the object the sync read from its
	// lister, in ObjectIn, on the handler's goroutine.
	Object   string
	ObjectIn Reg
	// KindAt: the handler's receiver holds the kind it syncs at this
	// offset (the replica set controller, which the replication manager
	// runs on ReplicationControllers too); 0: the kind is Kind.
	KindAt uint32
	Hits   string // how often the handler runs
}

// Controllers kpath follows. Signatures compared in the sources of
// v1.33.13–v1.37.2: every handler is handler(ctx, key string); the object
// functions take (ctx, obj, ...) on a pointer receiver, the object in
// RDI, but manageReplicas (ctx, activePods []*v1.Pod, rs), rs in R9.
var Controllers = []Controller{
	{Name: ControllerReplicaSet, Kind: "ReplicaSet", Prefix: "/registry/replicasets/", OwnedBy: ControllerDeployment,
		Handler: "k8s.io/kubernetes/pkg/controller/replicaset.(*ReplicaSetController).syncReplicaSet",
		// The only caller of the pod creates and deletes, called when the
		// controller's expectations are met (nearly every sync).
		Object: "k8s.io/kubernetes/pkg/controller/replicaset.(*ReplicaSetController).manageReplicas", ObjectIn: R9,
		KindAt: rsControllerKind, Hits: "once per sync of a ReplicaSet or ReplicationController (its create, each change of it or of one of its pods)"},
	// Every sync of a Deployment that exists lists its ReplicaSets first,
	// with the lister's object deep-copied.
	{Name: ControllerDeployment, Kind: "Deployment", Prefix: "/registry/deployments/",
		Handler: "k8s.io/kubernetes/pkg/controller/deployment.(*DeploymentController).syncDeployment",
		Object:  "k8s.io/kubernetes/pkg/controller/deployment.(*DeploymentController).getReplicaSetsForDeployment", ObjectIn: RDI,
		Hits: "once per sync of a Deployment (its create, each change of it or of its ReplicaSets)"},
	// manageJob(ctx, job, jobCtx): the pod creates, when expectations are met.
	{Name: ControllerJob, Kind: "Job", Prefix: "/registry/jobs/",
		Handler: "k8s.io/kubernetes/pkg/controller/job.(*Controller).syncJob",
		Object:  "k8s.io/kubernetes/pkg/controller/job.(*Controller).manageJob", ObjectIn: RDI,
		Hits: "once per sync of a Job (its create, each change of it or of one of its pods)"},
	// syncStatefulSet(ctx, set, pods): every sync of a StatefulSet that exists.
	{Name: ControllerStatefulSet, Kind: "StatefulSet", Prefix: "/registry/statefulsets/",
		Handler: "k8s.io/kubernetes/pkg/controller/statefulset.(*StatefulSetController).sync",
		Object:  "k8s.io/kubernetes/pkg/controller/statefulset.(*StatefulSetController).syncStatefulSet", ObjectIn: RDI,
		Hits: "once per sync of a StatefulSet (its create, each change of it or of one of its pods)"},
	// manage(ctx, ds, nodeList, hash): the pod creates and deletes, when
	// expectations are met.
	{Name: ControllerDaemonSet, Kind: "DaemonSet", Prefix: "/registry/daemonsets/",
		Handler: "k8s.io/kubernetes/pkg/controller/daemon.(*DaemonSetsController).syncDaemonSet",
		Object:  "k8s.io/kubernetes/pkg/controller/daemon.(*DaemonSetsController).manage", ObjectIn: RDI,
		Hits: "once per sync of a DaemonSet (its create, each change of it, of one of its pods or of a node)"},
}

// ControllerOfKind is the followed controller that syncs objects of kind.
func ControllerOfKind(kind string) (Controller, bool) {
	for _, c := range Controllers {
		if c.Kind == kind {
			return c, true
		}
	}
	return Controller{}, false
}

// ControllerNamed is the followed controller of that name.
func ControllerNamed(name string) (Controller, bool) {
	for _, c := range Controllers {
		if c.Name == name {
			return c, true
		}
	}
	return Controller{}, false
}

// Controller names as kube-controller-manager's --controllers flag spells
// them.
const (
	ControllerReplicaSet  = "replicaset"
	ControllerDeployment  = "deployment"
	ControllerJob         = "job"
	ControllerStatefulSet = "statefulset"
	ControllerDaemonSet   = "daemonset"
)

const (
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

// controllerRows are three rows a controller: the handler opens the sync
// (its key, and the kind where the receiver holds it), the handler's
// deferred log closes it on its goroutine, and the object function says
// what it read.
var controllerRows = func() []Row {
	var rows []Row
	for _, c := range Controllers {
		open := []Capture{str(FieldKey, RDI, RSI)}
		if c.KindAt != 0 {
			open = append(open, strAt(FieldController, RAX, c.KindAt))
		}
		id := "controller-manager." + c.Name
		rows = append(rows,
			Row{ID: id + ".sync", Component: KubeControllerManager, Stage: StageControllerSync,
				Role: Opens, Pair: c.Name + "-sync", By: ByGoroutine, Controller: c.Name,
				Symbol: c.Handler, Module: modKubernetes, Versions: kube133to137, Hits: c.Hits, Entry: open},
			Row{ID: id + ".sync.done", Component: KubeControllerManager, Stage: StageControllerSync,
				Role: Closes, Pair: c.Name + "-sync", By: ByGoroutine,
				Symbol: c.Handler + ".func1", Module: modKubernetes, Versions: kube133to137, Hits: c.Hits},
			Row{ID: id + ".object", Component: KubeControllerManager, Stage: StageSyncObject,
				Symbol: c.Object, Module: modKubernetes, Versions: kube133to137,
				Hits: "once per sync that acts on an existing object: " + c.Hits, Entry: syncObject(c.ObjectIn)})
	}
	return rows
}()
