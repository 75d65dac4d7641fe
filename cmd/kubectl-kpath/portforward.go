package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// portForwardFetcher reaches an agent as `kubectl port-forward` does: the
// API server opens a stream to the kubelet of the agent's node, which
// connects to the port inside the pod's network namespace (the host's, as
// the agent runs with hostNetwork). It works where pods/proxy cannot reach
// the node's address from the API server.
type portForwardFetcher struct {
	cs  kubernetes.Interface
	cfg *rest.Config
}

func (f portForwardFetcher) describe() string { return "port-forwards through the kubelets" }

func (f portForwardFetcher) get(ctx context.Context, pod *corev1.Pod, port int, path string, query url.Values) ([]byte, error) {
	transport, upgrader, err := spdy.RoundTripperFor(f.cfg)
	if err != nil {
		return nil, err
	}
	req := f.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward")
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, req.URL())
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return nil, err
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-errc:
		return nil, fmt.Errorf("port-forward to %s: %w", pod.Name, err)
	case <-ctx.Done():
		close(stop)
		return nil, ctx.Err()
	}
	defer close(stop)
	ports, err := pf.GetPorts()
	if err != nil || len(ports) == 0 {
		return nil, fmt.Errorf("port-forward to %s: no local port: %v", pod.Name, err)
	}
	u := fmt.Sprintf("http://127.0.0.1:%d%s?%s", ports[0].Local, path, query.Encode())
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("through port-forward: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("through port-forward: %s: %.200s", resp.Status, body)
	}
	return body, nil
}
