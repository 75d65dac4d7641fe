package probes

// Operators: any program that links controller-runtime (found by its build
// info, Options.Operators). Sources of v0.23.3 and v0.25.2 compared: the
// same reconcileHandler, Reconcile and Controller layout; offsets checked
// against the DWARF of the lab's operator built with v0.23.3 (test/e2e/
// testdata/widgetop). Two entry hits a reconcile, both on the push, and
// one CALL site more when it failed or asked to be requeued; one entry hit
// more for each write request it makes.

// cr023to025 is the controller-runtime range the rows were compared on.
const cr023to025 = ">=v0.23.0 <v0.26.0"

// crShape is the GC shape the controller's generic methods are stenciled
// for when they reconcile reconcile.Request (a struct of one
// types.NamespacedName): every controller the builder makes.
const crShape = "go.shape.struct { k8s.io/apimachinery/pkg/types.NamespacedName }"

const crController = "sigs.k8s.io/controller-runtime/pkg/internal/controller.(*Controller[" + crShape + "])"

// Stages of a reconcile.
const (
	StageReconcile = "reconcile" // one reconcile of one object by one controller
	// What reconcileHandler did with the result, when it was not a plain
	// success: each a call made only in that branch.
	StageReconcileError = "reconcile-error"
	StageRequeueAfter   = "reconcile-requeue-after"
	StageRequeue        = "reconcile-requeue"
	// A write request the program's client made (client-go's Do), and the
	// API server's write it became: on a reconcile's goroutine during it,
	// one of the reconcile's writes.
	StageReconcileCall  = "reconcile-call"
	StageReconcileWrite = "reconcile-write"
)

// PairReconcile is the reconcile span, from its handler to its end.
const PairReconcile = "reconcile"

var operatorRows = []Row{
	// reconcileHandler(ctx, req, priority) on a worker goroutine: c in RAX
	// (Controller.Name, a string, @0), the shape's dictionary in RBX, ctx
	// in RCX,RDI, req.Namespace in RSI,R8 and req.Name in R9,R10, priority
	// in R11. It opens the reconcile span.
	{ID: "operator.reconcile", Component: AnyOperator, Stage: StageReconcile,
		Role: Opens, Pair: PairReconcile, By: ByGoroutine,
		Symbol: crController + ".reconcileHandler",
		Module: ModControllerRuntime, Versions: cr023to025, Hits: "once per reconcile",
		Entry: []Capture{strAt(FieldController, RAX, 0), str(FieldNamespace, RSI, R8), str(FieldName, R9, R10)}},
	// Reconcile's deferred recover (func1) runs as the operator's own
	// Reconcile returned, on the same goroutine: it ends the span.
	{ID: "operator.reconcile.done", Component: AnyOperator, Stage: StageReconcile,
		Role: Closes, Pair: PairReconcile, By: ByGoroutine,
		Symbol: crController + ".Reconcile.func1",
		Module: ModControllerRuntime, Versions: cr023to025, Hits: "once per reconcile"},
	// The error branch of reconcileHandler's switch is the only one that
	// calls log.Error ("Reconciler error"); the RequeueAfter branch the
	// only one that calls fmt.Sprintf. A CALL is emulated like the push.
	{ID: "operator.reconcile.error", Component: AnyOperator, Stage: StageReconcileError,
		Symbol: "github.com/go-logr/logr.Logger.Error", CalledFrom: []string{crController + ".reconcileHandler"},
		Module: ModControllerRuntime, Versions: cr023to025, Hits: "once per reconcile that returned an error"},
	{ID: "operator.reconcile.requeue-after", Component: AnyOperator, Stage: StageRequeueAfter,
		Symbol: "fmt.Sprintf", CalledFrom: []string{crController + ".reconcileHandler"},
		Module: ModControllerRuntime, Versions: cr023to025, Hits: "once per reconcile that asked to be requeued after a delay"},
	// The deprecated Result.Requeue's branch is the only one that logs
	// "Reconcile done, requeueing": Logger.Info(msg) with the Logger's
	// three words in RAX,RBX,RCX, msg in RDI,RSI.
	// The program's write requests: client-go's rest.(*Request).Do(ctx),
	// which controller-runtime's client calls for every Create, Update,
	// Patch and Delete (and their status), on the caller's goroutine. r in
	// RAX: verb @160, namespace @224, resourceName @264 (empty for a
	// create), the same Request in client-go v0.33–v0.37. Reads are
	// filtered out in the kernel: a cached read makes no call, an uncached
	// GET or LIST is dropped there (counted as filtered).
	{ID: "operator.client.write", Component: AnyOperator, Stage: StageReconcileCall,
		Symbol: "k8s.io/client-go/rest.(*Request).Do",
		Module: modClientGo, Versions: k8s133to137,
		Hits:  "once per write request the program makes, from its reconciles or not (leader election's lease renewals, events)",
		Only:  &Match{FieldVerb, []string{"POST", "PUT", "PATCH", "DELETE"}},
		Entry: []Capture{strAt(FieldVerb, RAX, 160), strAt(FieldNamespace, RAX, 224), strAt(FieldName, RAX, 264)}},
	{ID: "operator.reconcile.requeue", Component: AnyOperator, Stage: StageRequeue,
		Symbol: "github.com/go-logr/logr.Logger.Info", CalledFrom: []string{crController + ".reconcileHandler"},
		CallArg: []string{"Reconcile done, requeueing"}, CallArgAt: RDI,
		Module: ModControllerRuntime, Versions: cr023to025, Hits: "once per reconcile that asked to be requeued (Result.Requeue)"},
}
