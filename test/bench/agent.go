package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// agent is a kpath-agent the bench started, with its metrics endpoint.
type agent struct {
	*proc
	metricsURL string
	devnull    *os.File
}

// target is a process the agent must have probes on before a round starts.
type target struct {
	component string
	pid       int
}

// startAgent starts kpath-agent with default flags except the exporter, the
// metrics address and extra, and waits until it has probes on every target.
func startAgent(ctx context.Context, env *benchEnv, dir string, targets []target, extra ...string) (*agent, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	a := &agent{metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", port)}
	args := []string{"--metrics-addr=127.0.0.1:" + strconv.Itoa(port), "--export=" + env.cfg.kpathExport}
	if env.cfg.kpathExport == "otlp" {
		args = append(args, "--otlp-endpoint="+env.sink.addr)
	} else if a.devnull, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
		return nil, err
	}
	args = append(append(args, extra...), env.cfg.agentFlags...)
	if a.proc, err = startProc("kpath-agent", filepath.Join(dir, "kpath-agent.log"), a.devnull, env.cfg.agentBin, args...); err != nil {
		a.close()
		return nil, err
	}
	var names []string
	for _, t := range targets {
		names = append(names, t.component)
	}
	err = waitFor(ctx, a.proc, env.cfg.attachWait, "attached to the bench's "+strings.Join(names, ", "), func() error {
		m, err := scrape(a.metricsURL)
		if err != nil {
			return err
		}
		var missing []string
		for _, t := range targets {
			if m.value("kpath_attached_probes", map[string]string{"component": t.component, "pid": strconv.Itoa(t.pid)}) <= 0 {
				missing = append(missing, fmt.Sprintf("%s[%d]", t.component, t.pid))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("no probes yet on %s", strings.Join(missing, ", "))
		}
		return nil
	})
	if err != nil {
		a.stop()
		return nil, err
	}
	return a, nil
}

// stop sends SIGINT (the agent detaches and flushes) and reaps it.
func (a *agent) stop() {
	if a.proc != nil {
		// The agent has its own 20 s shutdown watchdog; give it that and more.
		a.proc.stop(syscall.SIGINT, 30*time.Second)
	}
	a.close()
}

func (a *agent) close() {
	if a.devnull != nil {
		a.devnull.Close()
		a.devnull = nil
	}
}

var attachedRe = regexp.MustCompile(`msg=attached component=(\S+) pid=(\d+) .*\brows=(\S+)`)

// attachedRows reads from the agent's log which catalogue rows it attached
// to pid.
func (a *agent) attachedRows(pid int) string {
	b, _ := os.ReadFile(a.logPath)
	for _, m := range attachedRe.FindAllStringSubmatch(string(b), -1) {
		if m[2] == strconv.Itoa(pid) {
			return m[3]
		}
	}
	return "?"
}

// sample is one Prometheus sample.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

type metrics []sample

// value sums the samples of name whose labels include want.
func (m metrics) value(name string, want map[string]string) float64 {
	var v float64
next:
	for _, s := range m {
		if s.name != name {
			continue
		}
		for k, x := range want {
			if s.labels[k] != x {
				continue next
			}
		}
		v += s.value
	}
	return v
}

// byLabel sums the samples of name per value of label.
func (m metrics) byLabel(name, label string) map[string]float64 {
	out := map[string]float64{}
	for _, s := range m {
		if s.name == name {
			out[s.labels[label]] += s.value
		}
	}
	return out
}

func scrape(url string) (metrics, error) {
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format (enough of it for the
// agent's own metrics: no timestamps needed, comments skipped).
func parseMetrics(r io.Reader) (metrics, error) {
	var out metrics
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s := sample{labels: map[string]string{}}
		rest := line
		if i := strings.IndexAny(line, "{ "); i < 0 {
			return nil, fmt.Errorf("metrics: bad line %q", line)
		} else {
			s.name, rest = line[:i], line[i:]
		}
		if rest[0] == '{' {
			rest = rest[1:]
			for {
				rest = strings.TrimLeft(rest, ", ")
				if strings.HasPrefix(rest, "}") {
					rest = rest[1:]
					break
				}
				eq := strings.Index(rest, "=")
				if eq < 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
					return nil, fmt.Errorf("metrics: bad labels in %q", line)
				}
				key := strings.TrimSpace(rest[:eq])
				rest = rest[eq+2:]
				var val strings.Builder
				closed := false
				for i := 0; i < len(rest); i++ {
					c := rest[i]
					if c == '\\' && i+1 < len(rest) {
						i++
						switch rest[i] {
						case 'n':
							val.WriteByte('\n')
						default:
							val.WriteByte(rest[i])
						}
						continue
					}
					if c == '"' {
						rest = rest[i+1:]
						closed = true
						break
					}
					val.WriteByte(c)
				}
				if !closed {
					return nil, fmt.Errorf("metrics: unterminated label value in %q", line)
				}
				s.labels[key] = val.String()
			}
		}
		f := strings.Fields(rest)
		if len(f) < 1 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: value in %q: %w", line, err)
		}
		s.value = v
		out = append(out, s)
	}
	return out, sc.Err()
}

// hostProc is a live process found in /proc.
type hostProc struct {
	pid  int
	comm string
}

// findProcs lists live (not zombie) processes whose comm is one of names,
// except the pids in skip.
func findProcs(names []string, skip ...int) []hostProc {
	ents, _ := os.ReadDir("/proc")
	var out []hostProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		skipped := false
		for _, s := range skip {
			skipped = skipped || s == pid
		}
		if skipped {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		comm := strings.TrimSpace(string(b))
		match := false
		for _, n := range names {
			match = match || comm == n
		}
		if !match {
			continue
		}
		if st, err := readStat(pid); err != nil || st.state == 'Z' || st.state == 'X' {
			continue
		}
		out = append(out, hostProc{pid: pid, comm: comm})
	}
	return out
}

// bpfTracers lists live processes, other than skip, that hold BPF links (as
// kpath-agent, the kpath tests and other eBPF tracers do) or are called
// kpath-agent. Their uprobes may sit in the bench's apiserver and etcd.
func bpfTracers(skip int) []hostProc {
	ents, _ := os.ReadDir("/proc")
	var out []hostProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == skip || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err != nil {
			continue
		}
		comm := strings.TrimSpace(string(b))
		if st, err := readStat(pid); err != nil || st.state == 'Z' || st.state == 'X' {
			continue
		}
		found := comm == "kpath-agent"
		fds, _ := os.ReadDir(filepath.Join("/proc", e.Name(), "fd"))
		for _, fd := range fds {
			if found {
				break
			}
			l, _ := os.Readlink(filepath.Join("/proc", e.Name(), "fd", fd.Name()))
			found = l == "anon_inode:bpf_link"
		}
		if found {
			out = append(out, hostProc{pid: pid, comm: comm})
		}
	}
	return out
}

func procList(ps []hostProc) string {
	if len(ps) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s[%d]", p.comm, p.pid)
	}
	return b.String()
}
