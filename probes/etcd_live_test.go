package probes

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// labBinaries lists the lab's cached builds of a component, both flavours.
func labBinaries(name string) []string {
	root := os.Getenv("KPATH_CACHE_DIR")
	if root == "" {
		home, _ := os.UserHomeDir()
		root = filepath.Join(home, ".cache", "kpath")
	}
	m, _ := filepath.Glob(filepath.Join(root, "bin", "*", "*", name))
	return m
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestEtcdRowsLive attaches the etcd rows to a real etcd (each lab build)
// and checks that one optimistic txn, shaped as kube-apiserver sends it,
// yields the request, proposal, fsync, apply and trigger with the right key,
// revision and raft ID.
func TestEtcdRowsLive(t *testing.T) {
	needBPF(t)
	bins := labBinaries("etcd")
	if len(bins) == 0 {
		t.Skip("skipped: no lab etcd build under ~/.cache/kpath/bin (make lab-up builds it)")
	}
	for _, bin := range bins {
		t.Run(filepath.Base(filepath.Dir(filepath.Dir(bin))), func(t *testing.T) { testEtcdLive(t, bin) })
	}
}

func testEtcdLive(t *testing.T, bin string) {
	dir := t.TempDir()
	client, peer := freePort(t), freePort(t)
	cu, pu := fmt.Sprintf("http://127.0.0.1:%d", client), fmt.Sprintf("http://127.0.0.1:%d", peer)
	cmd := exec.Command(bin, "--data-dir", dir, "--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu, "--initial-cluster", "default="+pu, "--log-level", "error")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	tr, err := NewTracer(Options{Detail: true}) // every row, detail ones too
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	p, err := tr.Attach(cmd.Process.Pid, Etcd)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range p.Rows {
		if r.State != RowAttached {
			t.Errorf("row %s: %s %v", r.Row.ID, r.State, r.Err)
		}
	}
	var (
		mu     sync.Mutex
		events []Event
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tr.Read(ctx, func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() })

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{cu}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := "/registry/configmaps/ns/live"
	// etcd needs a moment to elect itself: wait with reads, so that the one
	// txn is never retried (a retry after a timeout that did write would
	// fail its compare).
	for i := 0; ; i++ {
		tctx, c := context.WithTimeout(ctx, time.Second)
		_, err = cli.Get(tctx, "/ready")
		c()
		if err == nil {
			break
		}
		if i == 100 {
			t.Fatalf("etcd never answered: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tctx, c := context.WithTimeout(ctx, 30*time.Second)
	resp, err := cli.Txn(tctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).Then(clientv3.OpPut(key, "v")).Commit()
	c()
	if err != nil || !resp.Succeeded {
		t.Fatalf("txn: %v, succeeded %v", err, resp != nil && resp.Succeeded)
	}
	rev := resp.Header.Revision
	time.Sleep(300 * time.Millisecond)

	mu.Lock()
	defer mu.Unlock()
	var req, rpc, prop, put, done, fsync *Event
	for i := range events {
		e := &events[i]
		switch e.Probe {
		case "etcd.request.txn":
			if e.Key == key {
				req = e
			}
		case "etcd.request.rpc":
			if e.Key == key {
				rpc = e
			}
		case "etcd.apply.put":
			if e.Key == key {
				put = e
			}
		}
	}
	if req == nil || put == nil {
		t.Fatalf("no txn request or apply for %s among %d events: %+v", key, len(events), events)
	}
	for i := range events {
		e := &events[i]
		switch e.Probe {
		case "etcd.raft.propose":
			if e.Goroutine == req.Goroutine && !e.Start.Before(req.Start) && !e.Start.After(req.End) {
				prop = e
			}
		case "etcd.apply.done":
			if prop != nil && e.RaftID == prop.RaftID {
				done = e
			}
		case "etcd.wal.fsync":
			if prop != nil && fsync == nil && !e.Start.Before(prop.Start) && !e.End.After(put.Start) {
				fsync = e
			}
		}
	}
	if req.Revision != rev || !req.Succeeded || put.Revision != rev {
		t.Errorf("txn revision %d succeeded %v, apply revision %d; etcd answered %d", req.Revision, req.Succeeded, put.Revision, rev)
	}
	if prop == nil || prop.RaftID == 0 {
		t.Fatalf("no raft proposal inside the txn request on goroutine %d", req.Goroutine)
	}
	if done == nil || done.Goroutine != put.Goroutine {
		t.Errorf("no Trigger of raft id %#x on the apply goroutine %d", prop.RaftID, put.Goroutine)
	}
	if fsync == nil {
		t.Errorf("no WAL fsync between proposal and apply")
	}
	if put.Start.Before(req.Start) || put.Start.After(req.End) {
		t.Errorf("apply at %v outside the request %v–%v", put.Start, req.Start, req.End)
	}
	// The RPC's stats, one entry hit: the same key, revision and result as
	// the gRPC handler's own span, and a start (etcd's clock, read from the
	// interceptor's startTime) just before the handler's.
	switch {
	case rpc == nil:
		t.Errorf("no etcd.request.rpc event for %s", key)
	case rpc.Method != "/etcdserverpb.KV/Txn" || rpc.Revision != rev || !rpc.Succeeded:
		t.Errorf("rpc stats: method %q revision %d succeeded %v; want Txn %d true", rpc.Method, rpc.Revision, rpc.Succeeded, rev)
	case rpc.Point || rpc.Start.After(req.Start) || req.Start.Sub(rpc.Start) > 5*time.Millisecond || rpc.End.Before(req.End):
		t.Errorf("rpc stats span %v–%v does not enclose the handler's %v–%v", rpc.Start, rpc.End, req.Start, req.End)
	}
	// The reads before the txn (Range RPCs) never left BPF: filtered there
	// by the row's Only, counted.
	for _, e := range events {
		if e.Probe == "etcd.request.rpc" && e.Method != "/etcdserverpb.KV/Txn" {
			t.Errorf("etcd.request.rpc passed a %s call", e.Method)
		}
	}
	var filtered uint64
	for _, rs := range tr.ReadStats() {
		if rs.Row == "etcd.request.rpc" {
			filtered = rs.Filtered
		}
	}
	if filtered == 0 {
		t.Errorf("no Range RPC counted as filtered by etcd.request.rpc")
	}
	t.Logf("txn %s rev %d took %v; raft id %#x; fsync %v", key, rev, req.Duration(), prop.RaftID, fsync.Duration())
}

// TestEtcdOfAnUncoveredVersion: a real etcd whose build info says a later
// minor than the catalogue covers (each lab build, its etcd modules'
// versions rewritten in place: v3.6.16 → v3.9.16) gets every row refused as
// not covered, by name, and nothing attached: never a row of another
// version's layout.
func TestEtcdOfAnUncoveredVersion(t *testing.T) {
	needBPF(t)
	bins := labBinaries("etcd")
	if len(bins) == 0 {
		t.Skip("skipped: no lab etcd build under ~/.cache/kpath/bin (make lab-up builds it)")
	}
	for _, b := range bins {
		name := filepath.Base(filepath.Dir(filepath.Dir(b))) + "/" + filepath.Base(filepath.Dir(b))
		t.Run(name, func(t *testing.T) { testEtcdUncovered(t, b) })
	}
}

func testEtcdUncovered(t *testing.T, bin string) {
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	// Every etcd module's line of the build info (and, in some builds, of
	// the runtime's copy of it), as a release of a later minor has them.
	lines := regexp.MustCompile(`(go\.etcd\.io/etcd/[a-z0-9/]+\tv3\.)[0-8](\.[0-9]+)`)
	server := regexp.MustCompile(`go\.etcd\.io/etcd/server/v3\tv3\.[0-8](\.[0-9]+)`).FindSubmatch(data)
	if server == nil {
		t.Fatalf("%s: no build info line of etcd's server module", bin)
	}
	want := "v3.9" + string(server[1])
	patched := filepath.Join(t.TempDir(), "etcd")
	if err := os.WriteFile(patched, lines.ReplaceAll(data, []byte("${1}9${2}")), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := OpenBinary(patched)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := b.ModuleVersion("go.etcd.io/etcd/server/v3"); err != nil || v != want {
		t.Fatalf("patched build info: %q %v", v, err)
	}
	b.Close()

	dir := t.TempDir()
	client, peer := freePort(t), freePort(t)
	cu, pu := fmt.Sprintf("http://127.0.0.1:%d", client), fmt.Sprintf("http://127.0.0.1:%d", peer)
	cmd := exec.Command(patched, "--data-dir", dir, "--listen-client-urls", cu, "--advertise-client-urls", cu,
		"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu, "--initial-cluster", "default="+pu, "--log-level", "error")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	tr := newTracer(t, Options{Detail: true})
	p, err := tr.Attach(cmd.Process.Pid, Etcd)
	if err == nil || !errors.Is(err, ErrNotCovered) || !strings.Contains(err.Error(), fmt.Sprint(cmd.Process.Pid)) {
		for _, r := range p.Rows {
			t.Logf("row %s (%s): %s %v", r.Row.ID, r.Row.Module, r.State, r.Err)
		}
		t.Fatalf("attach to etcd %s: %v; want a refusal naming the pid, every row not covered", want, err)
	}
	ids := map[string]bool{}
	for _, r := range p.Rows {
		if r.State != RowNotCovered || !strings.Contains(r.Err.Error(), r.Row.Module+" "+want) || !strings.Contains(r.Err.Error(), "upgrade kpath") {
			t.Errorf("row %s: %s %v; want not covered, naming the version and the fix", r.Row.ID, r.State, r.Err)
		}
		if ids[r.Row.ID] {
			t.Errorf("row %s reported twice", r.Row.ID)
		}
		ids[r.Row.ID] = true
	}
	if p.Attached() != 0 || len(ids) == 0 {
		t.Errorf("%d rows attached, %d reported", p.Attached(), len(ids))
	}
	t.Logf("%d etcd rows not covered, e.g. %v", len(ids), p.Rows[0].Err)
}
