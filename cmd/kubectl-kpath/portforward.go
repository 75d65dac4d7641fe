package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport"
	"k8s.io/client-go/transport/spdy"
)

// portForwardFetcher reaches an agent as `kubectl port-forward` does: the
// API server opens a stream to the kubelet of the agent's node, which
// connects to the port inside the pod's network namespace (the host's, as
// the agent runs with hostNetwork). It works where pods/proxy cannot reach
// the node's address from the API server.
//
// An agent that guards its endpoints (--metrics-auth=kubernetes) serves
// HTTPS and asks who the caller is: the fetcher presents the kubeconfig's
// own credentials, its client certificate or its bearer token, which pods/proxy
// cannot (the API server keeps them).
type portForwardFetcher struct {
	cs    kubernetes.Interface
	cfg   *rest.Config
	https *http.Client
}

// newPortForwardFetcher verifies the agents' serving certificates against
// agentCA when it is given, by chain only (the port-forward names the pod,
// and no host name is on the way); without it, the agents' self-signed
// certificates are taken unverified, the stream being the kubelet's,
// authenticated end to end but for the node's loopback.
func newPortForwardFetcher(cs kubernetes.Interface, cfg *rest.Config, agentCA string) (portForwardFetcher, error) {
	tc, err := cfg.TransportConfig()
	if err != nil {
		return portForwardFetcher{}, err
	}
	tlsc, err := transport.TLSConfigFor(tc)
	if err != nil {
		return portForwardFetcher{}, err
	}
	if tlsc == nil {
		tlsc = &tls.Config{}
	} else {
		tlsc = tlsc.Clone()
	}
	tlsc.ServerName, tlsc.RootCAs, tlsc.InsecureSkipVerify = "", nil, true
	if agentCA != "" {
		b, err := os.ReadFile(agentCA)
		if err != nil {
			return portForwardFetcher{}, fmt.Errorf("--agent-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return portForwardFetcher{}, fmt.Errorf("--agent-ca-file %s: no PEM certificate in it", agentCA)
		}
		tlsc.VerifyConnection = func(st tls.ConnectionState) error {
			inter := x509.NewCertPool()
			for _, c := range st.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter})
			return err
		}
	}
	rt, err := transport.HTTPWrappersForConfig(tc, &http.Transport{TLSClientConfig: tlsc})
	if err != nil {
		return portForwardFetcher{}, err
	}
	return portForwardFetcher{cs: cs, cfg: cfg, https: &http.Client{Transport: rt}}, nil
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
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0].Local)
	body, err := fetch(ctx, f.https, "https://"+addr, path, query)
	if rh := (tls.RecordHeaderError{}); errors.As(err, &rh) {
		// The agent answered in plain HTTP: it serves its endpoints to
		// anyone on the node's loopback (--metrics-auth=none) and needs no
		// credentials, so none is sent.
		body, err = fetch(ctx, http.DefaultClient, "http://"+addr, path, query)
	}
	return body, err
}

func fetch(ctx context.Context, c *http.Client, base, path string, query url.Values) ([]byte, error) {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path+"?"+query.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(hreq)
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
