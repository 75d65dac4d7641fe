package access

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// ServingTLS is the TLS configuration of the guarded endpoints: certFile and
// keyFile when given, else a certificate the agent signs itself at start
// (its callers then skip verification, as Prometheus' insecure_skip_verify
// does for kube-rbac-proxy's). Client certificates are asked for, never
// required, and verified by the Guard, so that a bad one gets an answer
// saying why instead of a failed handshake. It also says which certificate
// it serves, for the log.
func ServingTLS(certFile, keyFile string) (*tls.Config, string, error) {
	var cert tls.Certificate
	var err error
	what := certFile
	switch {
	case certFile != "" && keyFile != "":
		if cert, err = tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return nil, "", fmt.Errorf("--tls-cert-file/--tls-private-key-file: %w", err)
		}
	case certFile != "" || keyFile != "":
		return nil, "", fmt.Errorf("--tls-cert-file and --tls-private-key-file go together: give both or neither")
	default:
		if cert, err = selfSigned(); err != nil {
			return nil, "", fmt.Errorf("a self-signed serving certificate: %w", err)
		}
		sum := sha256.Sum256(cert.Certificate[0])
		what = fmt.Sprintf("self-signed, sha256 %x", sum)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS12,
	}, what, nil
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	host, _ := os.Hostname()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "kpath-agent@" + host},
		DNSNames:     []string{host, "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// The ConfigMap where kube-apiserver publishes the CA of its client
// certificates for components that authenticate callers the way it does.
const (
	clientCANamespace = "kube-system"
	clientCAConfigMap = "extension-apiserver-authentication"
	clientCAKey       = "client-ca-file"
)

// WatchClientCA fills cas from file, or, without one, from the client CA
// kube-apiserver publishes (kube-system/extension-apiserver-authentication),
// read again every refresh so that a rotated CA is taken up. A ConfigMap that
// cannot be read leaves client certificates refused (each refusal says why)
// while tokens keep working; it is logged, and the last good bundle stays.
func WatchClientCA(ctx context.Context, cs kubernetes.Interface, file string, refresh time.Duration, cas *CAs, log *slog.Logger) error {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return fmt.Errorf("--client-ca-file: %w", err)
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM(b) {
			return fmt.Errorf("--client-ca-file %s: no PEM certificate in it", file)
		}
		cas.Set(p)
		return nil
	}
	var last string
	seen := false
	read := func() {
		cm, err := cs.CoreV1().ConfigMaps(clientCANamespace).Get(ctx, clientCAConfigMap, metav1.GetOptions{})
		if err != nil {
			log.Warn("cannot read the cluster's client CA: client certificates are refused until it can be read (bearer tokens work)",
				"configmap", clientCANamespace+"/"+clientCAConfigMap, "err", err,
				"fix", "let the agent's service account get configmaps/extension-apiserver-authentication in kube-system (deploy/daemonset/base/rbac.yaml), or give --client-ca-file")
			return
		}
		pem, ok := cm.Data[clientCAKey]
		if seen && pem == last {
			return
		}
		last, seen = pem, true
		if !ok {
			log.Info("the cluster publishes no client CA: client certificates are refused (bearer tokens work)", "configmap", clientCANamespace+"/"+clientCAConfigMap)
			cas.Set(nil)
			return
		}
		p := x509.NewCertPool()
		if !p.AppendCertsFromPEM([]byte(pem)) {
			log.Warn("the cluster's client CA holds no PEM certificate: client certificates are refused", "configmap", clientCANamespace+"/"+clientCAConfigMap)
			cas.Set(nil)
			return
		}
		cas.Set(p)
		log.Info("client certificates verified against the cluster's client CA", "configmap", clientCANamespace+"/"+clientCAConfigMap)
	}
	read()
	go func() {
		t := time.NewTicker(refresh)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				read()
			}
		}
	}()
	return nil
}
