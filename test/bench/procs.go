package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// benchEnv is what every round shares.
type benchEnv struct {
	cfg  config
	tmp  string
	pki  pkiFiles
	sink *sink

	// The binaries the rounds run: --etcd and --apiserver, or with
	// --isolate renamed copies of them, and where names/ holds a symlink
	// called etcd and kube-apiserver to each copy.
	etcdRun, apiRun string
	names           string
}

// Names the isolated copies run under: kpath finds components by the base
// name of /proc/PID/exe, so no kpath-agent on the host finds these, except
// the bench's own through its --proc view (procView).
const (
	isolatedEtcd      = "kpathbench-etcd"
	isolatedAPIServer = "kpathbench-apiserver"
)

// isolateBinaries copies etcd and kube-apiserver under other names.
func (env *benchEnv) isolateBinaries() error {
	if !env.cfg.isolate {
		env.etcdRun, env.apiRun = env.cfg.etcdBin, env.cfg.apiserverBin
		return nil
	}
	bin := filepath.Join(env.tmp, "bin")
	env.names = filepath.Join(env.tmp, "names")
	for _, d := range []string{bin, env.names} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	env.etcdRun, env.apiRun = filepath.Join(bin, isolatedEtcd), filepath.Join(bin, isolatedAPIServer)
	for _, c := range []struct{ from, to, name string }{
		{env.cfg.etcdBin, env.etcdRun, "etcd"},
		{env.cfg.apiserverBin, env.apiRun, "kube-apiserver"},
	} {
		if err := copyFile(c.from, c.to); err != nil {
			return err
		}
		if err := os.Symlink(c.to, filepath.Join(env.names, c.name)); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// procView makes dir a /proc for the bench's agent (its --proc) that holds
// only the bench's etcd and kube-apiserver: PID/exe is a link whose base name
// is the component's (names/etcd, names/kube-apiserver), PID/stat the real
// one. The agent attaches through the real /proc/PID/exe, so the probes are
// the ones it would put on these processes under their usual names.
func (env *benchEnv) procView(dir string, etcdPID, apiPID int) error {
	for _, p := range []struct {
		pid  int
		name string
	}{{etcdPID, "etcd"}, {apiPID, "kube-apiserver"}} {
		d := filepath.Join(dir, strconv.Itoa(p.pid))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.Symlink(filepath.Join(env.names, p.name), filepath.Join(d, "exe")); err != nil {
			return err
		}
		if err := os.Symlink(fmt.Sprintf("/proc/%d/stat", p.pid), filepath.Join(d, "stat")); err != nil {
			return err
		}
	}
	return nil
}

// proc is a child process the bench started; stop always reaps it.
type proc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	logPath string
}

// startProc starts bin with stderr (and stdout unless given) in logPath. The
// child gets its own process group (a terminal ^C reaches only the bench,
// which then stops children in order) and SIGKILL if the bench dies.
func startProc(name, logPath string, stdout *os.File, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = lf
	cmd.Stdout = lf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), logPath: logPath}
	go func() {
		p.waitErr = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v\n%s", p.name, p.waitErr, p.tail(15))
	default:
		return nil
	}
}

// stop sends sig, waits up to grace, then kills. It is safe to call twice.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	fmt.Fprintf(os.Stderr, "bench: %s (pid %d) still running %v after %v; killing\n", p.name, p.pid(), grace, sig)
	_ = p.cmd.Process.Kill()
	<-p.done
}

// tail is the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// freePort returns a loopback port nobody listened on a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor polls ok every 200ms until it returns nil, p exits, or timeout.
func waitFor(ctx context.Context, p *proc, timeout time.Duration, what string, ok func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ok()
		if err == nil {
			return nil
		}
		if perr := p.exited(); perr != nil {
			return perr
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not %s after %v: %v\n%s", p.name, what, timeout, err, p.tail(15))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// startEtcd starts a single-member etcd with a fresh data dir under dir.
func startEtcd(ctx context.Context, env *benchEnv, dir string) (*proc, string, error) {
	cport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	pport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	curl := fmt.Sprintf("http://127.0.0.1:%d", cport)
	purl := fmt.Sprintf("http://127.0.0.1:%d", pport)
	p, err := startProc("etcd", filepath.Join(dir, "etcd.log"), nil, env.etcdRun,
		"--name=bench", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+curl, "--advertise-client-urls="+curl,
		"--listen-peer-urls="+purl, "--initial-advertise-peer-urls="+purl,
		"--initial-cluster=bench="+purl, "--initial-cluster-state=new", "--log-level=warn")
	if err != nil {
		return nil, "", err
	}
	hc := &http.Client{Timeout: 2 * time.Second}
	err = waitFor(ctx, p, 30*time.Second, "healthy", func() error {
		resp, err := hc.Get(curl + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		if !strings.Contains(b.String(), `"health":"true"`) {
			return fmt.Errorf("/health: %s", b.String())
		}
		return nil
	})
	if err != nil {
		p.stop(syscall.SIGTERM, 10*time.Second)
		return nil, "", err
	}
	return p, curl, nil
}

// startAPIServer starts kube-apiserver on a free port against etcdURL;
// tracingFile non-empty turns on its native OpenTelemetry tracing.
func startAPIServer(ctx context.Context, env *benchEnv, dir, etcdURL, tracingFile string) (*proc, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	k := env.pki
	args := []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=127.0.0.1", "--secure-port=" + strconv.Itoa(port),
		"--tls-cert-file=" + k.serverCert, "--tls-private-key-file=" + k.serverKey,
		"--client-ca-file=" + k.caCert, "--token-auth-file=" + k.tokens,
		"--authorization-mode=AlwaysAllow",
		"--service-account-key-file=" + k.saPub, "--service-account-signing-key-file=" + k.saKey,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-cluster-ip-range=10.99.0.0/24",
		"--disable-admission-plugins=ServiceAccount",
	}
	if tracingFile != "" {
		args = append(args, "--tracing-config-file="+tracingFile)
	}
	p, err := startProc("kube-apiserver", filepath.Join(dir, "kube-apiserver.log"), nil, env.apiRun, args...)
	if err != nil {
		return nil, "", err
	}
	return p, fmt.Sprintf("https://127.0.0.1:%d", port), nil
}

// writeTracingConfig writes the apiserver's TracingConfiguration: every
// request sampled, exported over OTLP gRPC to endpoint.
func writeTracingConfig(path, endpoint string) error {
	return os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1beta1
kind: TracingConfiguration
endpoint: %s
samplingRatePerMillion: 1000000
`, endpoint)), 0o600)
}

type pkiFiles struct {
	caCert, serverCert, serverKey, saKey, saPub, tokens string
	caPEM                                               []byte
	token                                               string
}

// writePKI writes a CA, a serving cert for 127.0.0.1, a service-account key
// pair and a token file with an admin in system:masters.
func writePKI(dir string) (pkiFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return pkiFiles{}, err
	}
	f := pkiFiles{
		caCert: filepath.Join(dir, "ca.crt"), serverCert: filepath.Join(dir, "srv.crt"), serverKey: filepath.Join(dir, "srv.key"),
		saKey: filepath.Join(dir, "sa.key"), saPub: filepath.Join(dir, "sa.pub"), tokens: filepath.Join(dir, "tokens.csv"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kpath-bench-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, IsCA: true, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return f, err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return f, err
	}
	srvKeyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return f, err
	}
	saPubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return f, err
	}
	f.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return f, err
	}
	f.token = fmt.Sprintf("%x", tok)
	files := []struct {
		path string
		data []byte
	}{
		{f.caCert, f.caPEM},
		{f.serverCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER})},
		{f.serverKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: srvKeyDER})},
		{f.saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)})},
		{f.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: saPubDER})},
		{f.tokens, []byte(f.token + `,admin,admin-uid,"system:masters"` + "\n")},
	}
	for _, x := range files {
		if err := os.WriteFile(x.path, x.data, 0o600); err != nil {
			return f, err
		}
	}
	return f, nil
}

// repoRoot walks up from the working directory to kpath's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/kpath/kpath\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the kpath repository (no go.mod of github.com/kpath/kpath above the working directory), or pass --agent")
		}
		dir = parent
	}
}

// buildAgent builds ./cmd/agent of the working tree into dir/kpath-agent
// and describes what it was built from.
func buildAgent(ctx context.Context, dir string) (bin, src string, err error) {
	root, err := repoRoot()
	if err != nil {
		return "", "", err
	}
	out := filepath.Join(dir, "kpath-agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/agent")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	fmt.Fprintln(os.Stderr, "bench: go build -o", out, "./cmd/agent")
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("building the agent: %w", err)
	}
	return out, gitState(root), nil
}

// gitState is the working tree's commit and its uncommitted changes (other
// than the bench's own files), which the agent was built with.
func gitState(root string) string {
	head, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "working tree of " + root + " (no git)"
	}
	st, _ := exec.Command("git", "-C", root, "status", "--porcelain", "--", ".",
		":(exclude)test/bench", ":(exclude)docs/benchmarks.md", ":(exclude)Makefile").Output()
	var changed []string
	for _, l := range strings.Split(strings.TrimSpace(string(st)), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			changed = append(changed, l)
		}
	}
	s := "working tree at " + strings.TrimSpace(string(head))
	if len(changed) > 0 {
		s += " with uncommitted changes: " + strings.Join(changed, ", ")
	}
	return s
}
