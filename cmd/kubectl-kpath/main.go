// kubectl-kpath is the kubectl plugin of kpath. Put it on PATH and run
//
//	kubectl kpath explain pod/NAME [-n NAMESPACE]
//
// With --trace-store it first reads the pod's startup trace from the trace
// store the agents export to, by the ID kpath derives from the pod's UID:
// in a big cluster that is one request, not one per agent. Otherwise, or
// when the store does not have it, it asks every kpath agent (pods labelled app.kubernetes.io/name=kpath-agent
// in namespace kpath) for the traces it holds about the pod, through the API
// server (a port-forward through the kubelet, or pods/proxy with --via=proxy), merges the
// pieces each agent saw by trace ID and prints one waterfall per trace, the
// slowest stage marked.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const usage = `kubectl kpath: kpath's kubectl plugin.

Usage:
  kubectl kpath explain pod/NAME [-n NAMESPACE] [flags]
  kubectl kpath explain TYPE/NAME [-n NAMESPACE] [flags]

  explain   print every trace the kpath agents hold about a pod (its writes,
            and as the catalogue covers them, scheduling and start-up), or
            about any other object (deploy/web, widgets.example.com/w1: its
            writes with the admission webhooks' and operators' work on them,
            reconciles included) as a waterfall with the slowest stage
            marked. The agents keep the last 2000 traces or 10 minutes.

Flags:
`

func main() {
	err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubectl-kpath:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type options struct {
	kubeconfig, context, namespace string
	agentNamespace, agentSelector  string
	via                            string
	timeout                        time.Duration
	limit                          int
	traceStore                     string
	agentCA                        string
}

func newFlags(o *options, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("kubectl kpath", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)")
	fs.StringVar(&o.context, "context", "", "kubeconfig context to use")
	fs.StringVar(&o.namespace, "namespace", "", "the pod's namespace (default: the context's, else default)")
	fs.StringVar(&o.namespace, "n", "", "shorthand for --namespace")
	fs.StringVar(&o.agentNamespace, "agent-namespace", "kpath", "namespace of the kpath agents")
	fs.StringVar(&o.agentSelector, "agent-selector", "app.kubernetes.io/name=kpath-agent", "label selector of the agent pods")
	fs.StringVar(&o.via, "via", "port-forward", "how to reach the agents: port-forward (through the kubelet, with your kubeconfig's credentials, which agents that guard their endpoints ask for) or proxy (the API server's pods/proxy, which passes on no credentials: only for agents with --metrics-auth=none)")
	fs.StringVar(&o.agentCA, "agent-ca-file", "", "CA bundle that verifies the agents' serving certificates (--tls-cert-file on the agents); empty: their certificates are not verified")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Second, "give up on an agent after this long")
	fs.IntVar(&o.limit, "limit", 0, "at most this many traces from each agent (0: the agent's default, 200)")
	fs.StringVar(&o.traceStore, "trace-store", os.Getenv("KPATH_TRACE_STORE"), "query API of the trace store the agents export to (Jaeger's, e.g. http://jaeger-query.observability:16686): the pod's startup trace is read there by its ID, and the agents are asked only when it is not there")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseArgs accepts flags before and after the positional arguments, as
// kubectl does (kubectl kpath explain pod/x -n ns).
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o options
	fs := newFlags(&o, stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err.Error()}
	}
	if len(pos) == 0 {
		fs.Usage()
		return usageError{"no command: want explain TYPE/NAME"}
	}
	switch pos[0] {
	case "explain":
	case "help":
		fs.Usage()
		return nil
	default:
		return usageError{fmt.Sprintf("unknown command %q: want explain", pos[0])}
	}
	if len(pos) != 2 {
		return usageError{"explain needs one argument: TYPE/NAME, e.g. pod/web"}
	}
	resource, name, err := objectName(pos[1])
	if err != nil {
		return usageError{err.Error()}
	}
	if o.via != "proxy" && o.via != "port-forward" {
		return usageError{fmt.Sprintf("--via=%q: want proxy or port-forward", o.via)}
	}

	rules := clientcmd.NewDefaultClientConfigLoadingRules() // $KUBECONFIG, then ~/.kube/config
	rules.ExplicitPath = o.kubeconfig
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: o.context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	if o.namespace == "" {
		if o.namespace, _, err = cc.Namespace(); err != nil || o.namespace == "" {
			o.namespace = "default"
		}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	var fetch fetcher = proxyFetcher{cs: cs}
	if o.via == "port-forward" {
		if fetch, err = newPortForwardFetcher(cs, cfg, o.agentCA); err != nil {
			return fmt.Errorf("--via=port-forward: %w", err)
		}
	}
	e := &explainer{cs: cs, fetch: fetch, opts: o, out: stdout, errOut: stderr}
	if o.traceStore != "" {
		e.store = &traceStore{base: o.traceStore, client: &http.Client{Timeout: o.timeout}}
	}
	if resource != "" {
		return e.explainObject(ctx, resource, o.namespace, name)
	}
	return e.explain(ctx, o.namespace, name)
}

// objectName reads TYPE/NAME: resource is empty for a pod (pod/NAME,
// pods/NAME, po/NAME or a bare NAME), else the type as given (deploy,
// widgets.kpath.dev, ...).
func objectName(arg string) (resource, name string, err error) {
	kind, name, ok := strings.Cut(arg, "/")
	if !ok {
		kind, name = "pod", arg
	}
	if kind == "" || name == "" || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("%q: want TYPE/NAME, e.g. pod/web or widgets.kpath.dev/w1", arg)
	}
	switch kind {
	case "pod", "pods", "po":
		return "", name, nil
	}
	return kind, name, nil
}
