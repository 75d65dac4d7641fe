package probes

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// needBPF skips a test that loads BPF programs when this is not root.
func needBPF(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: loading BPF and attaching uprobes needs root (CI runs as root)")
	}
}

var (
	targetOnce sync.Once
	targetPath string
	targetErr  error
)

// buildTarget builds testdata/target stripped, as release binaries are.
func buildTarget(t *testing.T) string {
	t.Helper()
	targetOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kpath-target")
		if err != nil {
			targetErr = err
			return
		}
		targetPath = filepath.Join(dir, "target")
		out, err := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", targetPath, "./testdata/target").CombinedOutput()
		if err != nil {
			targetErr = fmt.Errorf("build target: %v\n%s", err, out)
		}
	})
	if targetErr != nil {
		t.Fatal(targetErr)
	}
	return targetPath
}

type target struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startTarget(t *testing.T, path string) *target {
	t.Helper()
	cmd := exec.Command(path)
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	tg := &target{cmd: cmd, in: in, out: bufio.NewScanner(outp)}
	tg.expect(t, "ready")
	return tg
}

func (tg *target) expect(t *testing.T, want string) {
	t.Helper()
	if !tg.out.Scan() || tg.out.Text() != want {
		t.Fatalf("target said %q (err %v), want %q", tg.out.Text(), tg.out.Err(), want)
	}
}

func (tg *target) run(t *testing.T, n int) {
	t.Helper()
	fmt.Fprintf(tg.in, "%d\n", n)
	tg.expect(t, "done")
}

const testComponent Component = "test-target"

var testRows = []Row{
	{ID: "test.handle", Component: testComponent, Stage: "handle", Timed: true, Symbol: "main.handle",
		// handle(req *Request, key string, rev int64) (ok bool, newRev int64)
		Entry: []Capture{httpMethod(RAX), httpPath(RAX), str(FieldKey, RBX, RCX), u64(FieldRaftID, RDI)},
		Exit:  []Capture{boolean(FieldSucceeded, RAX), u64(FieldRevision, RBX)}},
	{ID: "test.respond", Component: testComponent, Stage: "respond", Symbol: "main.respond",
		// respond(r *Response): Header *Header @0, Revision @16 (as etcd's TxnResponse)
		Entry: []Capture{withAdd(u64At(FieldRevision, RAX, 0, 16), 1)}},
}

// newTracer is NewTracer for a test, closed when the test ends.
func newTracer(t *testing.T, o Options) *Tracer {
	t.Helper()
	tr, err := NewTracer(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// traceTarget attaches rows to a fresh target, makes it run n calls, and
// returns the tracer, the process and the events read (at least want).
func traceTarget(t *testing.T, rows []Row, n, want int) (*Tracer, *Process, []Event) {
	t.Helper()
	needBPF(t)
	return traceTargetAt(t, buildTarget(t), rows, n, want)
}

// traceTargetAt is traceTarget with the target built at path.
func traceTargetAt(t *testing.T, path string, rows []Row, n, want int) (*Tracer, *Process, []Event) {
	t.Helper()
	tr := newTracer(t, Options{Rows: rows})
	tg := startTarget(t, path)
	p, err := tr.Attach(tg.cmd.Process.Pid, testComponent)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Rows {
		if r.State != RowAttached {
			t.Fatalf("row %s: %s: %v", r.Row.ID, r.State, r.Err)
		}
	}
	var (
		mu     sync.Mutex
		events []Event
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- tr.Read(ctx, func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() })
	}()
	tg.run(t, n)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		got := len(events)
		mu.Unlock()
		if got >= want || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return tr, p, events
}

// siteRows: a call-site row that reads the results its caller saved, and
// a row whose one capture always fails (a nil pointer on its path).
var siteRows = []Row{
	{ID: "test.store.done", Component: testComponent, Stage: "store", Symbol: "main.record",
		CalledFrom: []string{"main.store"}, CallArg: []string{"write"},
		// record(verb string, n int64) at the call: verb in RAX,RBX; store
		// saved commit's (ok, newRev), returned in RAX, RBX.
		Entry: []Capture{str(FieldVerb, RAX, RBX), spilled(FieldSucceeded, RAX, 1), spilled(FieldRevision, RBX, 8)}},
	{ID: "test.walk", Component: testComponent, Stage: "walk", Symbol: "main.walk",
		// walk(n *Node): Next @0 (nil) → Val @8 fails; Val @8 reads.
		Entry: []Capture{u64At(FieldRevision, RAX, 0, 8), u64At(FieldRaftID, RAX, 8)}},
}

// TestTracerCallSitesAndUnreadCaptures: a call-site probe fires on the
// selected CALL only and reads what the caller saved; a capture that cannot
// be read is marked on the event and counted per row and field, and a row
// whose capture always fails is reported broken.
func TestTracerCallSitesAndUnreadCaptures(t *testing.T) {
	const n = 90
	tr, p, events := traceTarget(t, siteRows, n, 2*n)
	for _, r := range p.Rows {
		if !r.EntryAtPush {
			t.Errorf("row %s is not on a cheap site", r.Row.ID)
		}
		if r.Row.ID == "test.store.done" && r.Uprobes != 1 {
			t.Errorf("test.store.done: %d uprobes, want 1 (the CALL passing \"write\")", r.Uprobes)
		}
	}
	var stores, walks []Event
	for _, e := range events {
		switch e.Probe {
		case "test.store.done":
			stores = append(stores, e)
		case "test.walk":
			walks = append(walks, e)
		}
	}
	if len(stores) != n || len(walks) != n {
		t.Fatalf("%d store and %d walk events, want %d each", len(stores), len(walks), n)
	}
	for i, e := range stores {
		if e.Verb != "write" || e.Succeeded != (i%3 != 0) || e.Revision != int64(i+7) || e.Unread != 0 {
			t.Fatalf("store %d: verb %q ok %v rev %d unread %#x; want write, %v, %d, none", i, e.Verb, e.Succeeded, e.Revision, e.Unread, i%3 != 0, i+7)
		}
	}
	for i, e := range walks {
		if e.Unread != 1<<FieldRevision || e.RaftID != uint64(i) || e.Revision != 0 {
			t.Fatalf("walk %d: unread %#x raft id %d revision %d; want revision unread, raft id %d", i, e.Unread, e.RaftID, e.Revision, i)
		}
	}
	var walk ReadStats
	for _, rs := range tr.ReadStats() {
		if rs.Row == "test.walk" {
			walk = rs
		}
	}
	if walk.Events != n || walk.Unread[FieldRevision] != n || walk.Unread[FieldRaftID] != 0 {
		t.Errorf("test.walk read stats %+v; want %d events, revision unread in all", walk, n)
	}
	if b := BrokenReads(walk); len(b) != 1 || b[0] != FieldRevision {
		t.Errorf("broken reads of test.walk: %v, want [revision]", b)
	}
}

func TestTracerCapturesArgumentsAndResults(t *testing.T) {
	const n = 300
	tr, p, events := traceTarget(t, testRows, n, 2*n)
	checkCaptures(t, tr, p, events, n)
}

// checkCaptures checks what testRows read from n calls of the target.
func checkCaptures(t *testing.T, tr *Tracer, p *Process, events []Event, n int) {
	t.Helper()
	// handle has 3 RETs, so 1 entry + 3 RET uprobes; respond is a point.
	if got := p.Rows[0].Uprobes; got != 4 {
		t.Errorf("test.handle: %d uprobes, want 4 (entry + 3 RETs)", got)
	}

	handles := map[string]Event{}
	var responds []Event
	for _, e := range events {
		switch e.Probe {
		case "test.handle":
			handles[e.Key] = e
		case "test.respond":
			responds = append(responds, e)
		}
	}
	if len(handles) != n || len(responds) != n {
		t.Fatalf("got %d handle spans and %d respond points, want %d each", len(handles), len(responds), n)
	}
	var gid uint64
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("/registry/things/ns/t-%d", i)
		e, ok := handles[key]
		if !ok {
			t.Fatalf("no span for %s", key)
		}
		wantOK, wantRev := i%3 != 0, int64(i)+int64(i%3)
		if e.Method != "PATCH" || e.Path != fmt.Sprintf("/api/v1/namespaces/ns/things/t-%d", i) ||
			e.RaftID != uint64(i) || e.Succeeded != wantOK || !e.SucceededSet || e.Revision != wantRev {
			t.Fatalf("span %d = %+v; want method PATCH, path t-%d, raft id %d, ok %v, revision %d", i, e, i, i, wantOK, wantRev)
		}
		if e.End.Before(e.Start) || e.Point {
			t.Fatalf("span %d: start %v end %v point %v", i, e.Start, e.End, e.Point)
		}
		if gid == 0 {
			gid = e.Goroutine
		}
		if e.Goroutine != gid || e.ParentGoroutine == 0 || e.ParentGoroutine == gid {
			t.Fatalf("span %d: goroutine %d parent %d; want all on one goroutine with another parent", i, e.Goroutine, e.ParentGoroutine)
		}
	}
	for i, e := range responds {
		if e.Revision != int64(1000+i)+1 || !e.Point {
			t.Fatalf("respond %d: revision %d point %v, want %d", i, e.Revision, e.Point, 1000+i+1)
		}
	}
	hits, err := tr.Hits()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hits {
		want := uint64(2 * n) // entry + one RET per call
		if h.Row == "test.respond" {
			want = uint64(n)
		}
		if h.Hits != want {
			t.Errorf("row %s: %d hits, want %d", h.Row, h.Hits, want)
		}
	}
	drops, err := tr.Drops()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range drops {
		if v != 0 && k != "ret_without_entry" {
			t.Errorf("drop counter %s = %d, want 0", k, v)
		}
	}
}

func TestAttachBadInput(t *testing.T) {
	needBPF(t)
	tr := newTracer(t, Options{Rows: testRows})

	t.Run("non-Go binary", func(t *testing.T) {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		_, err := tr.Attach(cmd.Process.Pid, testComponent)
		if !errors.Is(err, ErrNotGo) || !strings.Contains(err.Error(), fmt.Sprint(cmd.Process.Pid)) {
			t.Fatalf("attach to sleep: %v; want ErrNotGo naming the pid", err)
		}
	})
	t.Run("Go binary without the symbols", func(t *testing.T) {
		rows := []Row{{ID: "test.missing", Component: testComponent, Stage: "x", Symbol: "main.doesNotExist"}}
		tr2 := newTracer(t, Options{Rows: rows})
		tg := startTarget(t, buildTarget(t))
		p, err := tr2.Attach(tg.cmd.Process.Pid, testComponent)
		if !errors.Is(err, ErrSymbolNotFound) || !strings.Contains(err.Error(), "main.doesNotExist") || p == nil || p.Rows[0].State != RowFailed {
			t.Fatalf("attach: %v; want ErrSymbolNotFound naming main.doesNotExist", err)
		}
	})
	t.Run("process that exited", func(t *testing.T) {
		tg := startTarget(t, buildTarget(t))
		pid := tg.cmd.Process.Pid
		tg.cmd.Process.Kill()
		tg.cmd.Wait()
		_, err := tr.Attach(pid, testComponent)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprint(pid)) {
			t.Fatalf("attach to exited pid %d: %v; want an error naming it", pid, err)
		}
	})
	t.Run("still traces the rest", func(t *testing.T) {
		tg := startTarget(t, buildTarget(t))
		p, err := tr.Attach(tg.cmd.Process.Pid, testComponent)
		if err != nil || p.Attached() != 2 {
			t.Fatalf("attach after failures: %v (%d rows)", err, p.Attached())
		}
	})
}

// TestWatchRefusesAScriptNamedAsAComponent: a wrapper script called
// kube-apiserver is a process named kube-apiserver that runs the shell. The
// watcher names it, the shell and the script once, and traces the rest.
func TestWatchRefusesAScriptNamedAsAComponent(t *testing.T) {
	needBPF(t)
	var rows []Row
	for _, c := range []Component{KubeAPIServer, Etcd} {
		for _, r := range testRows {
			r.Component = c
			rows = append(rows, r)
		}
	}
	tr := newTracer(t, Options{Rows: rows})

	dir := t.TempDir()
	script := filepath.Join(dir, "kube-apiserver")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nwhile :; do sleep 1; done\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	sh := exec.Command(script)
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Process.Kill(); sh.Wait() })
	etcd := filepath.Join(dir, "etcd") // the test target under a component's name
	b, err := os.ReadFile(buildTarget(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(etcd, b, 0o755); err != nil {
		t.Fatal(err)
	}
	tg := startTarget(t, etcd)

	// A /proc holding just these two, so that no other process of the
	// machine is looked at.
	root := t.TempDir()
	for _, pid := range []int{sh.Process.Pid, tg.cmd.Process.Pid} {
		if err := os.Symlink(fmt.Sprintf("/proc/%d", pid), filepath.Join(root, fmt.Sprint(pid))); err != nil {
			t.Fatal(err)
		}
	}
	// Until the shell has exec'd the script, its comm is the test's.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", sh.Process.Pid))
		if strings.TrimSpace(string(c)) == "kube-apiserver" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the script's comm is %q", c)
		}
		time.Sleep(10 * time.Millisecond)
	}

	var events []AttachEvent
	scans := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err = tr.Watch(ctx, root, 10*time.Millisecond, func(e AttachEvent) { events = append(events, e) }, func() {
		if scans++; scans == 3 {
			cancel()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 2 {
		t.Fatalf("%d attach events in 3 scans, want 2 (the script once, the target once): %+v", len(events), events)
	}
	for _, e := range events {
		switch e.Found.PID {
		case sh.Process.Pid:
			msg := fmt.Sprint(e.Err)
			shell, _ := filepath.EvalSymlinks("/bin/sh")
			for _, want := range []string{fmt.Sprint(sh.Process.Pid), shell + " " + script, "not traced", "exec"} {
				if !strings.Contains(msg, want) {
					t.Errorf("the script's refusal %q does not name %q", msg, want)
				}
			}
			if e.Process != nil || e.Found.Component != KubeAPIServer {
				t.Errorf("the script was attached as %s", e.Found.Component)
			}
			t.Logf("%v", e.Err)
		case tg.cmd.Process.Pid:
			if e.Err != nil || e.Process == nil || e.Process.Attached() != len(testRows) || e.Found.Component != Etcd {
				t.Errorf("the target: %v, %+v", e.Err, e.Found)
			}
		default:
			t.Errorf("an event for pid %d", e.Found.PID)
		}
	}
}

// TestAttachReadsTheGivenProc: with the host's /proc elsewhere (--proc),
// the binary and the start time come from there, as discovery saw them.
func TestAttachReadsTheGivenProc(t *testing.T) {
	needBPF(t)
	path := buildTarget(t)
	tr := newTracer(t, Options{Rows: testRows})
	tg := startTarget(t, path)
	pid := tg.cmd.Process.Pid
	root := t.TempDir()
	dir := filepath.Join(root, fmt.Sprint(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(path, filepath.Join(dir, "exe")); err != nil {
		t.Fatal(err)
	}
	// A start time no real process has: field 22 after the comm.
	stat := fmt.Sprintf("%d (target) S %s 4242424242 0\n", pid, strings.Repeat("0 ", 18))
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := tr.AttachIn(root, pid, testComponent)
	if err != nil {
		t.Fatal(err)
	}
	if p.Exe != path || p.StartTime != 4242424242 || p.Attached() != len(testRows) {
		t.Errorf("attached %d rows, exe %q start %d; want %d rows from %s, start 4242424242", p.Attached(), p.Exe, p.StartTime, len(testRows), path)
	}
}

// TestAttachNeverStallsTheReader: attaching to kube-apiserver (every row,
// detail ones too: symbol lookups, RET and CALL sweeps of large functions,
// links) while another traced process fills a small ring buffer: the reader
// keeps decoding during the attach, and no event is dropped. On the lab
// (KPATH_E2E=1): its kube-apiserver is the large binary.
func TestAttachNeverStallsTheReader(t *testing.T) {
	needBPF(t)
	lab := needPodLab(t)
	path := buildTarget(t)
	tr := newTracer(t, Options{Rows: append(slices.Clone(testRows), Catalogue...), Detail: true, RingBytes: 1 << 20})
	tg := startTarget(t, path)
	if _, err := tr.Attach(tg.cmd.Process.Pid, testComponent); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		decoded []time.Time // when each target event was decoded
	)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- tr.Read(ctx, func(e Event) {
			if e.Component == testComponent {
				mu.Lock()
				decoded = append(decoded, time.Now())
				mu.Unlock()
			}
		})
	}()
	// About 40 000 records a second for 2 s: the reader keeps up, but one
	// stalled for a tenth of a second would overflow 1 MiB (about 2000
	// records).
	ran := make(chan struct{})
	go func() { fmt.Fprintf(tg.in, "%d 20\n", 40000); tg.expect(t, "done"); close(ran) }()
	time.Sleep(300 * time.Millisecond)
	from := time.Now()
	p, err := tr.Attach(lab.pids[KubeAPIServer], KubeAPIServer)
	to := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	<-ran
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	during := 0
	mu.Lock()
	for _, at := range decoded {
		if at.After(from) && at.Before(to) {
			during++
		}
	}
	total := len(decoded)
	var gap time.Duration
	var gapAt time.Time
	for i := 1; i < len(decoded); i++ {
		if d := decoded[i].Sub(decoded[i-1]); d > gap {
			gap, gapAt = d, decoded[i-1]
		}
	}
	mu.Unlock()
	t.Logf("longest wait between two decoded events: %v, %v after the attach began", gap.Round(time.Millisecond), gapAt.Sub(from).Round(time.Millisecond))
	drops, err := tr.Drops()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("attached %d kube-apiserver rows in %v; %d target events decoded, %d of them during the attach; ring full %d",
		p.Attached(), to.Sub(from).Round(time.Millisecond), total, during, drops["ringbuf_full"])
	if during == 0 {
		t.Errorf("no event was decoded during the %v the attach took: the reader waited for it", to.Sub(from))
	}
	if drops["ringbuf_full"] != 0 {
		t.Errorf("the ring buffer dropped %d events", drops["ringbuf_full"])
	}
}
