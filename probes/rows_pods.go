package probes

// podRows follow a pod from kube-apiserver's watch cache through the
// informers of kube-scheduler and the kubelet to its containers.
//
// Registers and offsets were read from the DWARF of the lab builds
// (Kubernetes v1.35.4, client-go v0.35.4, go1.26) at each function's entry
// PC, results at the RETs from the ABI, and everything was proven live on the
// lab (pods_live_test.go). For 1.33 and 1.34 the signatures, bodies where
// inlining could change, and the structs read were compared in the sources
// (k8s.io/kubernetes v1.33.13 and v1.34.4, staging v0.33.13 and v0.34.4): a
// range reaches back only as far as they are identical; where 1.33 differs
// (the scheduling cycle's state was a *CycleState; the kubelet status
// manager took no logger and no ctx), the row has a variant for it, checked
// against the DWARF of a v1.33.13 build and live (make test-versions).
//
// Join keys: the pod UID everywhere but the watch cache's key; namespace and
// name where the slots allow (the BPF event has three string slots); the
// resourceVersion (etcd revision) where the object is at hand.
//
// Hit budget, measured by pods_live_test.go on the lab: one pod with two
// containers, from create to Running, fires the default pod rows 12 times
// (10 with one container): scheduler.queue.add 1, scheduler.cycle 2,
// kubelet.pod.received 1, kubelet.sandbox.create 2, kubelet.container.start
// 1 and kubelet.cri.start 1 per container, kubelet.status.set 2. With the
// pod's 4 writes at 7 write-path hits each, its lifecycle costs 38 (README:
// ≤ 40). The detail rows add about 22: informers 8, apiserver.watch.cache 4,
// kubelet.pod.sync 4, kubelet.pod.updated 2, kubelet.status.write 2,
// scheduler.bind 2.

const (
	modKubernetes = "k8s.io/kubernetes"
	modClientGo   = "k8s.io/client-go"

	kube133      = ">=v1.33.0 <v1.34.0"
	kube133to135 = ">=v1.33.0 <v1.36.0"
	kube133to137 = ">=v1.33.0 <v1.38.0"
	kube134to137 = ">=v1.34.0 <v1.38.0"
	kube136to137 = ">=v1.36.0 <v1.38.0"
	// k8s133to137 (rows.go) covers the staging modules v0.33–v0.37:
	// k8s.io/apiserver, k8s.io/client-go and k8s.io/cri-client.
)

// Stages of the pod rows.
const (
	StageWatchCache     = "watch-cache"      // apiserver: event in the watch cache, queued for dispatch to watchers
	StageInformer       = "informer-receive" // a component's reflector received the object from its watch
	StageSchedulerQueue = "scheduler-queue"  // pod added to the scheduling queue
	StageSchedule       = "scheduling-cycle" // one scheduling attempt: filter, score, assume
	StageBind           = "bind"             // the scheduler binds the pod: POST pods/binding
	StagePodSync        = "pod-sync"         // the kubelet syncs the pod (create / update)
	StageSandbox        = "sandbox-create"   // the kubelet creates the pod sandbox (CRI RunPodSandbox)
	StageContainerStart = "start-container"  // the kubelet pulls (if needed), creates and starts one container
	StageCRIStart       = "cri-start"        // the runtime started the container (its StartedAt) → the kubelet's CRI StartContainer call returned
	StageStatusSet      = "status-set"       // the kubelet computed a pod status (status manager cache)
	StageStatusWrite    = "status-write"     // the kubelet's status manager writes the status to the API
)

// Offsets in any top-level API object, TypeMeta then ObjectMeta (v1.Pod,
// core.Pod, PartialObjectMetadata, ...): DWARF of v1.Pod and core.Pod in the
// lab builds; both structs are the same in apimachinery v0.33–v0.35.
const (
	objName      = 0x20
	objNamespace = 0x40
	objUID       = 0x60
	objRV        = 0x70 // ResourceVersion: string, ptr @0x70, len @0x78
)

// v1.PodStatus → ContainerStatuses → State.Running (DWARF of the lab
// kubelet; k8s.io/api v0.34 and v0.35 agree up to these fields).
const (
	podStatusContainers = 208 // PodStatus.ContainerStatuses, a slice
	containerStatusSize = 208 // sizeof(v1.ContainerStatus)
	containerRunning    = 24  // ContainerStatus.State (@16) .Running (@8)
)

// objMeta captures namespace, name and UID of the object at path (pointer
// hops from r ending at the object).
func objMeta(r Reg, path ...uint32) []Capture {
	at := func(off uint32) []uint32 { return append(append([]uint32{}, path...), off) }
	return []Capture{strAt(FieldNamespace, r, at(objNamespace)...), strAt(FieldName, r, at(objName)...), strAt(FieldUID, r, at(objUID)...)}
}

// objRevision captures the object's resourceVersion string as text words
// and length (FieldRVText0/1, FieldRVLen); the reader parses it into
// Event.Revision. Up to 16 digits.
func objRevision(r Reg, path ...uint32) []Capture {
	at := func(offs ...uint32) []uint32 { return append(append([]uint32{}, path...), offs...) }
	return []Capture{
		u64At(FieldRVText0, r, at(objRV, 0)...),
		u64At(FieldRVText1, r, at(objRV, 8)...),
		u64At(FieldRVLen, r, at(objRV+8)...),
	}
}

// informerRow is the client-go reflector → RealFIFO hand-off, one row per
// component that runs shared informers (Row.Component is single-valued).
// client-go v0.35 uses RealFIFO (feature InOrderInformers, on by default
// since v0.33); a binary that turned it off uses DeltaFIFO and this row
// stays silent. addToItems_locked(deltaActionType DeltaType, skipTransform
// bool, obj interface{}): obj in RSI (type), R8 (data → the object).
func informerRow(id string, c Component, detail bool, hits string) Row {
	return Row{ID: id, Component: c, Stage: StageInformer, Detail: detail,
		Symbol: "k8s.io/client-go/tools/cache.(*RealFIFO).addToItems_locked",
		Module: modClientGo, Versions: k8s133to137, Hits: hits,
		Entry: append(objMeta(R8), objRevision(R8)...)}
}

var podRows = []Row{
	// kube-apiserver: the cacher got an event from its etcd watch, put it in
	// the watch cache and hands it to the dispatcher (before the per-watcher
	// fan-out). event *watchCacheEvent in RBX: Object iface @16 (data @24),
	// Key @80 (/pods/NS/NAME: the etcd key without /registry),
	// ResourceVersion uint64 @96. Detail: it costs a hit on every write of
	// the cluster, and the watch lag is measured at the reflectors anyway;
	// this splits it into the apiserver's part and the rest.
	{ID: "apiserver.watch.cache", Component: KubeAPIServer, Stage: StageWatchCache, Detail: true,
		Symbol: "k8s.io/apiserver/pkg/storage/cacher.(*Cacher).processEvent",
		Module: modAPIServer, Versions: k8s133to137,
		Hits: "once per write of any resource the watch cache holds (all but Events by default): every pod create, binding, " +
			"status patch, delete; leases, nodes, ...; plus a bookmark (no key, no object) per etcd progress notification",
		Entry: []Capture{strAt(FieldKey, RBX, 80), u64At(FieldRevision, RBX, 96), strAt(FieldUID, RBX, 24, objUID)}},

	// Informers. kube-scheduler's pod informer is on the pod's path; the
	// controller-manager's only sees it (its controllers act on owners).
	// Detail for the scheduler too: it fires on every write of every pod
	// (4 per pod startup), while scheduler.queue.add marks the one receipt
	// on the pod's path, the create, with one hit.
	informerRow("scheduler.informer.receive", KubeScheduler, true,
		"once per watch event per informer of kube-scheduler (pods: every pod write; also nodes, PVs, ...); once per object on a relist"),
	informerRow("controller-manager.informer.receive", KubeControllerManager, true,
		"once per watch event per informer of kube-controller-manager (pods, nodes, leases, ...); once per object on a relist or a resync (12–24 h)"),
	// Any operator or controller built on client-go, when named with
	// --client-go-programs: its informers' receipts give its watch lag.
	informerRow("client-go.informer.receive", AnyClientGo, false,
		"once per watch event per informer of the program; once per object on a relist or a resync"),

	// kube-scheduler. PriorityQueue.Add(logger, pod): pod in RSI. The
	// informer's handler calls it a fraction of a millisecond after the
	// reflector received the create, so it stands for the scheduler's watch
	// receipt: once per pod instead of once per write of any pod.
	queueAddRow(kube133to135, RSI),
	// v1.36 passes a context instead of the logger: Add(ctx, pod), pod in RDI.
	queueAddRow(kube136to137, RDI),
	// schedulingCycle(ctx, state, fwk, podInfo *QueuedPodInfo, start,
	// podsToActivate): podInfo → PodInfo @0 → Pod @0. Its entry opens the
	// cycle; the binding cycle's start (success) or the failure handler
	// closes it, joined by the pod's UID. v1.34 made state an interface
	// (it was a *CycleState): podInfo in R10, in R9 before.
	cycleRow(kube133, R9),
	cycleRow(kube134to137, R10),
	// bindingCycle(ctx, state, fwk, scheduleResult ScheduleResult,
	// assumedPodInfo *QueuedPodInfo, start, podsToActivate) starts on its
	// own goroutine as soon as a cycle succeeded: scheduleResult is on the
	// stack (SuggestedHost, the node, @8), assumedPodInfo in R10 (R9 on
	// v1.33, as above). The cycle span ends here instead of at
	// schedulingCycle's RET: a goroutine start later, no single-step.
	cycleDoneRow(kube133, R9),
	cycleDoneRow(kube134to137, R10),
	// handleSchedulingFailure(ctx, fwk, podInfo, status *Status,
	// nominatingInfo, start): podInfo in R8, status (non-nil) in R9. It also
	// handles binding failures, after the cycle was closed: counted
	// binding-failed.
	{ID: "scheduler.cycle.failed", Component: KubeScheduler, Stage: StageSchedule,
		Role: Closes, Pair: PairCycle, By: ByUID, Unpaired: "binding-failed",
		Symbol: "k8s.io/kubernetes/pkg/scheduler.(*Scheduler).handleSchedulingFailure",
		Module: modKubernetes, Versions: kube133to137, Hits: "once per failed scheduling or binding attempt",
		Entry: []Capture{strAt(FieldUID, R8, 0, 0, objUID), u64(FieldFailed, R9)}},
	// bind(ctx, fwk, assumed *v1.Pod, targetNode string, state) *Status:
	// pod in R8, node in R9,R10; the RET comes after the POST pods/binding
	// answered and the scheduler cache finished the binding. Status in RAX.
	// Detail: the binding write itself is traced in kube-apiserver, and the
	// binding stage runs from the cycle's end to its commit.
	{ID: "scheduler.bind", Component: KubeScheduler, Stage: StageBind, Timed: true, Detail: true,
		Symbol: "k8s.io/kubernetes/pkg/scheduler.(*Scheduler).bind",
		Module: modKubernetes, Versions: kube133to137, Hits: "once per pod bound",
		Entry: []Capture{strAt(FieldUID, R8, objUID), strAt(FieldName, R8, objName), str(FieldNode, R9, R10)},
		Exit:  []Capture{u64At(FieldFailed, RAX, 0)}},

	// kubelet. Its pods come from a plain Reflector into an UndeltaStore
	// (field selector spec.nodeName), not from an informer. Add(obj
	// interface{}): obj in RBX,RCX, RCX → *v1.Pod, the decoded object itself.
	{ID: "kubelet.pod.received", Component: Kubelet, Stage: StageInformer,
		Symbol: "k8s.io/client-go/tools/cache.(*UndeltaStore).Add",
		Module: modClientGo, Versions: k8s133to137, Hits: "once per pod bound to this node (watch ADDED); also once per static pod manifest file added (no resourceVersion)",
		Entry: append(objMeta(RCX), objRevision(RCX)...)},
	{ID: "kubelet.pod.updated", Component: Kubelet, Stage: StageInformer, Detail: true,
		Symbol: "k8s.io/client-go/tools/cache.(*UndeltaStore).Update",
		Module: modClientGo, Versions: k8s133to137, Hits: "once per update of a pod on this node (its own status patches included)",
		Entry: append(objMeta(RCX), objRevision(RCX)...)},
	// (*Kubelet).SyncPod(ctx, updateType, pod, mirrorPod, podStatus)
	// (isTerminal bool, err error): pod in RSI; err's type word in RBX at a RET.
	syncPodRow(kube133to135, RBX),
	// v1.36 adds a result: (isTerminal bool, postSync func(), err error), err's
	// type word in RCX at a RET.
	syncPodRow(kube136to137, RCX),
	// createPodSandbox(ctx, pod, attempt): pod in RDI. Its entry opens
	// the sandbox; the end of the CRI call inside closes it.
	{ID: "kubelet.sandbox.create", Component: Kubelet, Stage: StageSandbox,
		Role: Opens, Pair: PairSandbox, By: ByGoroutine,
		Symbol: "k8s.io/kubernetes/pkg/kubelet/kuberuntime.(*kubeGenericRuntimeManager).createPodSandbox",
		Module: modKubernetes, Versions: kube133to137, Hits: "once per sandbox created (pod start, sandbox re-creation)",
		Entry: objMeta(RDI)},
	// The kubelet's instrumented CRI client defers recordOperation(op,
	// start) in each call; the compiler wraps that deferred call in a
	// function of its own (.deferwrap1), which runs when the call is over,
	// on the caller's goroutine: the end of RunPodSandbox, one entry hit.
	// Whether the call failed is not at hand there: a failed sandbox is
	// followed by another, and the last one before the containers counts.
	{ID: "kubelet.sandbox.done", Component: Kubelet, Stage: StageSandbox,
		Role: Closes, Pair: PairSandbox, By: ByGoroutine,
		Symbol: "k8s.io/kubernetes/pkg/kubelet/kuberuntime.instrumentedRuntimeService.RunPodSandbox.deferwrap1",
		Module: modKubernetes, Versions: kube133to137, Hits: "once per sandbox created"},
	// startContainer(ctx, sandboxID, sandboxConfig, spec *startSpec, pod, ...)
	// (message string, err error): spec in R9 → container @0 → Name @0; pod
	// in R10. Its entry opens the container start.
	{ID: "kubelet.container.start", Component: Kubelet, Stage: StageContainerStart,
		Role: Opens, Pair: PairContainer, By: ByGoroutine,
		Symbol: "k8s.io/kubernetes/pkg/kubelet/kuberuntime.(*kubeGenericRuntimeManager).startContainer",
		Module: modKubernetes, Versions: kube133to137, Hits: "once per container (init, regular, ephemeral) started or restarted",
		Entry: []Capture{strAt(FieldUID, R10, objUID), strAt(FieldName, R10, objName), strAt(FieldContainer, R9, 0, 0)}},
	// The end of the CRI StartContainer inside it, on the same goroutine
	// (its deferred recordOperation, as for the sandbox): the first moment
	// the kubelet knows the runtime started the container. It closes the
	// container start; a start that failed before the call stays open and
	// is counted no-end.
	{ID: "kubelet.cri.start", Component: Kubelet, Stage: StageContainerStart,
		Role: Closes, Pair: PairContainer, By: ByGoroutine,
		Symbol: "k8s.io/kubernetes/pkg/kubelet/kuberuntime.instrumentedRuntimeService.StartContainer.deferwrap1",
		Module: modKubernetes, Versions: kube133to137, Hits: "once per container started"},
	// SetPodStatus(logger, pod, status v1.PodStatus): pod in RSI (v1.33 has
	// no logger: RBX), status on the stack at RSP+8. The status is the
	// kubelet's view after a sync, before the status manager truncates its
	// times to seconds: each running container's State.Running.StartedAt is
	// the runtime's own start time in nanoseconds (CRI ContainerStatus).
	// Read for the first two containers: ContainerStatuses @208 (len @216),
	// ContainerStatus is 208 bytes, State.Running @24, StartedAt @0
	// (time.Time wall @0, ext @8); the same in k8s.io/api v0.33–v0.37.
	statusSetRow(kube133, RBX),
	statusSetRow(kube134to137, RSI),
	// syncPod(ctx, uid types.UID, status versionedPodStatus): UID in RDI,RSI
	// (v1.33 has no ctx: RBX,RCX); status on the stack at RSP+8: podName @8,
	// podNamespace @24. Detail: the PATCH it sends is traced in
	// kube-apiserver.
	statusWriteRow(kube133, RBX, RCX),
	statusWriteRow(kube134to137, RDI, RSI),
}

// cycleRow is kube-scheduler's schedulingCycle, the *QueuedPodInfo in pi.
func cycleRow(versions string, pi Reg) Row {
	return Row{ID: "scheduler.cycle", Component: KubeScheduler, Stage: StageSchedule,
		Role: Opens, Pair: PairCycle, By: ByUID,
		Symbol: "k8s.io/kubernetes/pkg/scheduler.(*Scheduler).schedulingCycle",
		Module: modKubernetes, Versions: versions, Hits: "once per scheduling attempt (retries of unschedulable pods included)",
		Entry: []Capture{strAt(FieldUID, pi, 0, 0, objUID)}}
}

// cycleDoneRow is kube-scheduler's bindingCycle, the assumed *QueuedPodInfo
// in pi.
func cycleDoneRow(versions string, pi Reg) Row {
	return Row{ID: "scheduler.cycle.done", Component: KubeScheduler, Stage: StageSchedule,
		Role: Closes, Pair: PairCycle, By: ByUID,
		Symbol: "k8s.io/kubernetes/pkg/scheduler.(*Scheduler).bindingCycle",
		Module: modKubernetes, Versions: versions, Hits: "once per pod scheduled",
		Entry: []Capture{strAt(FieldUID, pi, 0, 0, objUID), strAt(FieldNode, RSP, 8)}}
}

// statusSetRow is the kubelet's SetPodStatus, the pod in pod.
func statusSetRow(versions string, pod Reg) Row {
	return Row{ID: "kubelet.status.set", Component: Kubelet, Stage: StageStatusSet,
		Symbol: "k8s.io/kubernetes/pkg/kubelet/status.(*manager).SetPodStatus",
		Module: modKubernetes, Versions: versions, Hits: "once per pod sync (the pod's arrival, each container change, about once a minute while it runs)",
		Entry: append(objMeta(pod),
			u64At(FieldStatuses, RSP, 8+podStatusContainers+8),
			optional(u64At(FieldStartedWall0, RSP, 8+podStatusContainers, containerRunning, 0)),
			optional(u64At(FieldStartedExt0, RSP, 8+podStatusContainers, containerRunning, 8)),
			optional(u64At(FieldStartedWall1, RSP, 8+podStatusContainers, containerStatusSize+containerRunning, 0)),
			optional(u64At(FieldStartedExt1, RSP, 8+podStatusContainers, containerStatusSize+containerRunning, 8)))}
}

// statusWriteRow is the kubelet status manager's syncPod, the UID in
// uid, uidLen.
func statusWriteRow(versions string, uid, uidLen Reg) Row {
	return Row{ID: "kubelet.status.write", Component: Kubelet, Stage: StageStatusWrite, Detail: true,
		Symbol: "k8s.io/kubernetes/pkg/kubelet/status.(*manager).syncPod",
		Module: modKubernetes, Versions: versions, Hits: "once per new pod status version (and per reconcile of a stale one, checked every 10 s)",
		Entry: []Capture{str(FieldUID, uid, uidLen), strAt(FieldNamespace, RSP, 8+24), strAt(FieldName, RSP, 8+8)}}
}

// optional marks a capture whose pointer is nil when what it reads is
// absent (State.Running of a container that does not run).
func optional(c Capture) Capture { c.Optional = true; return c }

// queueAddRow is kube-scheduler's PriorityQueue.Add, the pod in podReg.
func queueAddRow(versions string, podReg Reg) Row {
	return Row{ID: "scheduler.queue.add", Component: KubeScheduler, Stage: StageSchedulerQueue,
		Symbol: "k8s.io/kubernetes/pkg/scheduler/backend/queue.(*PriorityQueue).Add",
		Module: modKubernetes, Versions: versions, Hits: "once per unscheduled pod added",
		Entry: append(objMeta(podReg), objRevision(podReg)...)}
}

// syncPodRow is the kubelet's SyncPod, the pod in RSI and its error's type
// word in errReg at a RET.
func syncPodRow(versions string, errReg Reg) Row {
	return Row{ID: "kubelet.pod.sync", Component: Kubelet, Stage: StagePodSync, Timed: true, Detail: true,
		Symbol: "k8s.io/kubernetes/pkg/kubelet.(*Kubelet).SyncPod",
		Module: modKubernetes, Versions: versions,
		Hits:  "once per pod worker sync: the pod's arrival, each container change PLEG reports, each spec update, and a resync about every minute (--sync-frequency) per running pod",
		Entry: objMeta(RSI),
		Exit:  []Capture{u64(FieldFailed, errReg)}}
}
