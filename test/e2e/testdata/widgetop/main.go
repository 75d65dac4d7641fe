// widgetop is the lab's operator for the tests: a controller-runtime
// controller of its own custom resource, Widget (kpath.dev/v1), written
// the way operators are (no kpath anything in it). Each reconcile writes
// the Widget's status and a ConfigMap named after it; a Widget annotated
// kpath.dev/fail-first fails its first reconcile of each generation with
// an error, and the retry succeeds; one annotated kpath.dev/requeue-first
// asks to be requeued after 100 ms instead, one annotated
// kpath.dev/requeue-now-first to be requeued at once (Result.Requeue). With --webhook-port it also
// serves a mutating admission webhook (controller-runtime's webhook
// server) at /mutate-pods that sleeps as long as the object's annotation
// kpath.dev/webhook-sleep says, then allows it. kpath must find it by
// itself: it is started with no flag naming it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

var widgetGV = schema.GroupVersion{Group: "kpath.dev", Version: "v1"}

// Widget is typed, as kubebuilder makes them: what operators reconcile.
type Widget struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Status            WidgetStatus `json:"status,omitempty"`
}

type WidgetStatus struct {
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

type WidgetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Widget `json:"items"`
}

func (w *Widget) DeepCopyObject() runtime.Object {
	c := *w
	w.ObjectMeta.DeepCopyInto(&c.ObjectMeta)
	return &c
}

func (l *WidgetList) DeepCopyObject() runtime.Object {
	c := *l
	c.Items = make([]Widget, len(l.Items))
	for i := range l.Items {
		c.Items[i] = *l.Items[i].DeepCopyObject().(*Widget)
	}
	return &c
}

type reconciler struct {
	c      client.Client
	mu     sync.Mutex
	failed map[string]int64 // widget → the generation whose first reconcile failed or was requeued
}

// Reconcile says on stderr why it failed: the test's log shows it.
func (r *reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	res, err := r.reconcile(ctx, req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "widgetop: reconcile %s: %v\n", req, err)
	}
	return res, err
}

func (r *reconciler) reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	w := &Widget{}
	if err := r.c.Get(ctx, req.NamespacedName, w); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	for _, ask := range []string{"kpath.dev/fail-first", "kpath.dev/requeue-first", "kpath.dev/requeue-now-first"} {
		if _, ok := w.GetAnnotations()[ask]; !ok {
			continue
		}
		r.mu.Lock()
		first := r.failed[req.String()] != w.GetGeneration()
		r.failed[req.String()] = w.GetGeneration()
		r.mu.Unlock()
		switch {
		case first && ask == "kpath.dev/fail-first":
			return reconcile.Result{}, errors.New("first reconcile of this generation fails, as asked")
		case first && ask == "kpath.dev/requeue-now-first":
			return reconcile.Result{Requeue: true}, nil //nolint:staticcheck // the deprecated field operators still return
		case first:
			return reconcile.Result{RequeueAfter: 100 * time.Millisecond}, nil
		}
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: req.Namespace, Name: "widget-" + req.Name}}
	if _, err := ctrl.CreateOrUpdate(ctx, r.c, cm, func() error {
		cm.Data = map[string]string{"generation": fmt.Sprint(w.GetGeneration())}
		return nil
	}); err != nil {
		return reconcile.Result{}, err
	}
	if w.Status.ObservedGeneration == w.GetGeneration() {
		return reconcile.Result{}, nil
	}
	w.Status.ObservedGeneration = w.GetGeneration()
	if err := r.c.Status().Update(ctx, w); err != nil && !apierrors.IsConflict(err) {
		return reconcile.Result{}, err
	}
	return reconcile.Result{}, nil
}

func main() {
	// controller-runtime registers --kubeconfig itself.
	namespace := flag.String("namespace", "", "namespace to reconcile")
	webhookPort := flag.Int("webhook-port", 0, "serve the /mutate-pods webhook on 127.0.0.1 at this port (0: none)")
	certDir := flag.String("webhook-cert-dir", "", "the webhook server's tls.crt and tls.key")
	flag.Parse()
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintln(os.Stderr, "widgetop:", err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		fmt.Fprintln(os.Stderr, "widgetop:", err)
		os.Exit(1)
	}
	scheme.AddKnownTypes(widgetGV, &Widget{}, &WidgetList{})
	metav1.AddToGroupVersion(scheme, widgetGV)
	opts := manager.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{*namespace: {}}},
	}
	if *webhookPort != 0 {
		opts.WebhookServer = webhook.NewServer(webhook.Options{Host: "127.0.0.1", Port: *webhookPort, CertDir: *certDir})
	}
	mgr, err := manager.New(cfg, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "widgetop:", err)
		os.Exit(1)
	}
	r := &reconciler{c: mgr.GetClient(), failed: map[string]int64{}}
	if err := ctrl.NewControllerManagedBy(mgr).Named("widget").For(&Widget{}).Complete(r); err != nil {
		fmt.Fprintln(os.Stderr, "widgetop:", err)
		os.Exit(1)
	}
	if *webhookPort != 0 {
		mgr.GetWebhookServer().Register("/mutate-pods", &webhook.Admission{Handler: admission.HandlerFunc(sleepAsAsked)})
	}
	ctx := ctrl.SetupSignalHandler()
	go func() {
		if mgr.GetCache().WaitForCacheSync(ctx) {
			fmt.Println("synced")
		}
	}()
	if err := mgr.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "widgetop:", err)
		os.Exit(1)
	}
}

// sleepAsAsked allows every object, after sleeping as long as its
// kpath.dev/webhook-sleep annotation says (a Go duration).
func sleepAsAsked(ctx context.Context, req admission.Request) admission.Response {
	var obj struct {
		Metadata struct {
			Annotations map[string]string `json:"annotations"`
		} `json:"metadata"`
	}
	if err := json.Unmarshal(req.Object.Raw, &obj); err != nil {
		return admission.Errored(400, err)
	}
	if d, err := time.ParseDuration(obj.Metadata.Annotations["kpath.dev/webhook-sleep"]); err == nil {
		time.Sleep(d)
	}
	return admission.Allowed("")
}
