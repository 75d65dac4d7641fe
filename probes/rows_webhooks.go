package probes

// Webhook servers: controller-runtime's admission.Webhook, in any program
// that links controller-runtime (found like an operator, by its build
// info). Its handling of one AdmissionReview is a span from ServeHTTP's
// entry (before the body is read) to writeAdmissionResponse's (the answer,
// encoded next), two entry hits on the push. The answer carries the
// review's UID, which the apiserver made for the call: the span joins the
// apiserver's call span by it, inside the write's trace, so that the
// network and TLS time stand apart from the handler's. Sources of v0.23.3
// and v0.25.2 compared; registers checked against the DWARF of the lab's
// operator (test/e2e/testdata/widgetop, which serves a webhook).

// StageWebhookServer is a webhook server's handling of one call.
const StageWebhookServer = "webhook-server"

// PairWebhookServe is the server's span, from ServeHTTP to its answer.
const PairWebhookServe = "webhook-serve"

const crWebhook = "sigs.k8s.io/controller-runtime/pkg/webhook/admission.(*Webhook)."

var webhookServerRows = []Row{
	// ServeHTTP(w http.ResponseWriter, r *http.Request): wh in RAX, w in
	// RBX,RCX, r in RDI.
	{ID: "operator.webhook.serve", Component: AnyOperator, Stage: StageWebhookServer,
		Role: Opens, Pair: PairWebhookServe, By: ByGoroutine,
		Symbol: crWebhook + "ServeHTTP",
		Module: ModControllerRuntime, Versions: cr023to025, Hits: "once per admission review served",
		Entry: []Capture{httpPath(RDI)}},
	// writeAdmissionResponse(w io.Writer, ar v1.AdmissionReview): wh in
	// RAX, w in RBX,RCX, ar's six words in RDI…R11: TypeMeta's two strings,
	// then Request and Response (*AdmissionResponse, its UID @0) in R11.
	{ID: "operator.webhook.respond", Component: AnyOperator, Stage: StageWebhookServer,
		Role: Closes, Pair: PairWebhookServe, By: ByGoroutine,
		Symbol: crWebhook + "writeAdmissionResponse",
		Module: ModControllerRuntime, Versions: cr023to025, Hits: "once per admission review answered",
		Entry: []Capture{strAt(FieldUID, R11, 0)}},
}
