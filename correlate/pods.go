package correlate

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kpath/kpath/probes"
)

// Stages of a pod's startup. They partition the time from the create
// request to the status write that follows the last container start, so
// they add up to it; each is charged to the component that holds the pod
// then. Watch lag per consumer is reported beside them (it overlaps).
const (
	PodAdmission      = "admission"       // create request → storage write (filters, decode, admission, validation, encode)
	PodEtcdWait       = "etcd-wait"       // storage write → etcd's gRPC handler takes the txn: the apiserver waits, charged to etcd
	PodEtcdCommit     = "etcd-commit"     // etcd request → the key applied (watchers notified)
	PodSchedulingWait = "scheduling-wait" // committed → the successful scheduling cycle starts (watch delivery, queue)
	PodScheduling     = "scheduling"      // the successful scheduling cycle (filter, score, assume)
	PodBinding        = "binding"         // cycle ended → binding committed (permit, pre-bind, the binding write)
	PodKubeletWatch   = "kubelet-watch"   // binding committed → the kubelet receives the pod
	PodKubeletSync    = "kubelet-sync"    // received → sandbox creation starts (admission, volumes, ...)
	PodSandbox        = "sandbox"         // sandbox creation
	PodContainerStart = "container-start" // sandbox ready → last container started (the runtime's StartedAt when the kubelet's status has it)
	PodStatusReport   = "status-report"   // last container started → its status write committed
	PodWatchLag       = "watch-lag"       // a write committed → one consumer's reflector has it
)

// podPartition is the partition in causal order: each stage, the component
// charged with it (the one holding the pod), and where it ends; the next
// stage begins there, the first at the create request's start.
var podPartition = []struct {
	stage string
	comp  probes.Component
	end   func(*podLife, *startup) time.Time
}{
	{PodAdmission, probes.KubeAPIServer, func(l *podLife, _ *startup) time.Time { return l.create.StorageWrite }},
	{PodEtcdWait, probes.Etcd, func(l *podLife, _ *startup) time.Time { return l.create.EtcdRequest }},
	{PodEtcdCommit, probes.Etcd, func(l *podLife, _ *startup) time.Time { return l.create.Committed }},
	{PodSchedulingWait, probes.KubeScheduler, func(_ *podLife, s *startup) time.Time { return s.cycle.Start }},
	{PodScheduling, probes.KubeScheduler, func(_ *podLife, s *startup) time.Time { return s.cycle.End }},
	{PodBinding, probes.KubeScheduler, func(_ *podLife, s *startup) time.Time { return s.bindingWrite.Committed }},
	{PodKubeletWatch, probes.Kubelet, func(l *podLife, _ *startup) time.Time { return l.kubeletRcv.Start }},
	{PodKubeletSync, probes.Kubelet, func(l *podLife, _ *startup) time.Time { return l.sandbox.Start }},
	{PodSandbox, probes.Kubelet, func(l *podLife, _ *startup) time.Time { return l.sandbox.End }},
	{PodContainerStart, probes.Kubelet, func(_ *podLife, s *startup) time.Time { return s.startedAt() }},
	{PodStatusReport, probes.Kubelet, func(_ *podLife, s *startup) time.Time { return s.status.Committed }},
}

// PodStages lists the partition's stages in causal order.
var PodStages = func() []string {
	var out []string
	for _, p := range podPartition {
		out = append(out, p.stage)
	}
	return out
}()

// StageTime is one measured stage of one pod, for the histograms.
type StageTime struct {
	Stage     string
	Component string
	Duration  time.Duration
}

// PodTrace is a pod's startup: its trace and the stage durations in it.
type PodTrace struct {
	UID, Namespace, Name string
	Trace                Trace
	Stages               []StageTime
	// Late marks more spans of a trace already emitted: the watch lag of a
	// consumer that received the pod's write after the startup was over (a
	// slow operator). Same trace ID; not another trace.
	Late bool
}

// PodOptions bound the pod correlator.
type PodOptions struct {
	// Settle is how long a finished startup waits for late pieces. Default 1 s.
	Settle time.Duration
	// MaxWait is how long a pod may take to start before what is known is
	// emitted incomplete. Default 5 min.
	MaxWait time.Duration
	// MaxPending caps the pods being followed. Default 20000.
	MaxPending int
	// Meta, when set, adds what the API knows of a pod (node, owner) to
	// its root span.
	Meta func(uid string) (PodMeta, bool)
	// Creator, when set, says which controller's sync created a pod of
	// namespace ns whose controller owner is kind/name, its create having
	// begun at t (Syncs.Creator): it names it on the root and links to it.
	Creator func(ns, kind, name string, t time.Time) (Creator, bool)
	// Node is this agent's node. A pod bound to another node is started by
	// that node's kubelet, and that node's agent emits that part of its
	// trace (the same trace, under the same root): here the pod is done
	// once bound. Empty: every kubelet the agent follows is its node's.
	Node string
	// SeesAPIServer says whether the agent follows a kube-apiserver, whose
	// writes are a pod's create, binding and status. Without one (an agent
	// on a worker node) a pod is done once its kubelet started it, and the
	// control-plane agent's root is its spans' parent. Nil: it does.
	SeesAPIServer func() bool
}

// WithDefaults fills in the documented defaults.
func (o PodOptions) WithDefaults() PodOptions {
	if o.Settle == 0 {
		o.Settle = time.Second
	}
	if o.MaxWait == 0 {
		o.MaxWait = 5 * time.Minute
	}
	if o.MaxPending == 0 {
		o.MaxPending = 20000
	}
	return o
}

// PodMeta is what the API server says of a pod, beyond the probes.
type PodMeta struct {
	Node, OwnerKind, OwnerName string
}

// Pods follows each pod from its create request to Running. How the
// pod's events join is the catalogue's (probes.PodShape), assembled by the
// generic Assembler: the probes' events by the pod's UID, the pod's writes
// (from Writes) found from a receipt of the pod at the create's revision
// and by name after it. What the joined moments mean — the stage
// partition, the watch lags, the container start — is read here, from
// the assembled trace. The trace ID comes from the pod UID, so agents on
// different nodes put their spans in the same trace.
type Pods struct {
	opts PodOptions
	emit func(PodTrace)

	locked
	writes map[int64]Write // the pods' writes the assembler holds, by revision
	// arrived is writes' revisions by arrival, for their expiry: a flush
	// looks at the oldest only.
	arrived []revAt
	// started names the pods whose startup was emitted and lingers, with
	// its UID: their later writes are no part of it and are not held.
	started map[podName]string
	stats   PodStats
}

// revAt is a write's revision and a time of it, in Unix ns: half a
// time.Time, and there are many.
type revAt struct {
	rev, at int64
}

type podName struct{ ns, name string }

// PodStats counts what the pod correlator did.
type PodStats struct {
	Traces, Incomplete, Evicted uint64
	Orphans                     uint64 // events of pods never followed (created before the agent, or long running)
	Disordered                  uint64 // stages out of causal order: not exported as a partition
	StartedByCRI                uint64 // complete traces whose container start ends at the CRI reply: the runtime's StartedAt was not read
}

// containerStart is one container start: from the kubelet's startContainer
// to the end of its CRI StartContainer call (a span the catalogue pairs).
type containerStart struct {
	ev     probes.Event
	failed bool
}

// podLife is what the assembled trace of one pod holds, read for its
// meaning.
type podLife struct {
	uid, ns, name string
	opts          *PodOptions

	create     *Write
	writes     []Write // later writes of this pod, by revision
	receives   []probes.Event
	cycles     []probes.Event
	bind       *probes.Event // scheduler.bind, a detail row
	kubeletRcv *probes.Event
	sandbox    *probes.Event
	containers []containerStart
	statusSets []probes.Event // the kubelet's status after each sync (SetPodStatus)
	creator    *Creator       // looked up once, as the root is first built
}

// lagsSent is what an emitted pod trace keeps while it lingers, the
// assembler having shed its events: what a late receipt of one of the
// startup's writes needs to become a watch-lag span of the same trace.
type lagsSent struct {
	id            TraceID
	root          SpanID
	uid, ns, name string
	// committed is the startup's writes: their revisions (ascending) and
	// commit times; the last is the startup's last.
	committed []revAt
	sent      []lagKey // watch lags emitted
}

type lagKey struct {
	comp string
	rev  int64
}

func (s *lagsSent) lastRev() int64 {
	if len(s.committed) == 0 {
		return 0
	}
	return s.committed[len(s.committed)-1].rev
}

func (s *lagsSent) commit(rev int64) (time.Time, bool) {
	i, ok := slices.BinarySearchFunc(s.committed, rev, func(r revAt, rev int64) int { return cmp.Compare(r.rev, rev) })
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(0, s.committed[i].at), true
}

// mark records a lag as emitted, and says whether it was not yet.
func (s *lagsSent) mark(k lagKey) bool {
	if slices.Contains(s.sent, k) {
		return false
	}
	s.sent = append(s.sent, k)
	return true
}

// NewPods returns a pod correlator calling emit with each pod's startup.
// emit runs with the lock held.
func NewPods(opts PodOptions, emit func(PodTrace)) *Pods {
	opts = opts.WithDefaults()
	p := &Pods{opts: opts, emit: emit, writes: map[int64]Write{}, started: map[podName]string{}}
	p.a = NewAssembler(&probes.PodShape, AssemblerOptions{
		Settle: opts.Settle, MaxWait: opts.MaxWait, Retain: orphanTTL, MaxPending: opts.MaxPending,
		Name:     func(e *probes.Event) (string, int64) { return e.UID, 0 },
		Complete: func(t *Assembly) bool { return p.life(t).startup().done },
		Emit:     p.emitTrace,
		// An emitted startup still takes a slow consumer's receipt of one
		// of its writes, as more of its trace.
		Linger: opts.MaxWait,
		Late:   p.late,
		Shed:   true,
		Forget: p.forget,
	})
	return p
}

// Stats returns the counters.
func (p *Pods) Stats() PodStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Evicted = p.a.Stats().Evicted
	for k, n := range p.a.Unjoined() {
		if k.Reason == "orphan" {
			s.Orphans += n
		}
	}
	return s
}

// orphanTTL is how long an event of an unknown pod waits for its create.
const orphanTTL = 30 * time.Second

// PodTraceID names the trace of a pod's startup.
func PodTraceID(uid string) TraceID { return derivedTraceID("pod", uid) }

// podRootID is the root span's ID: derived, so an agent that does not see
// the create (a node agent) can still hang its spans under it.
func podRootID(uid string) SpanID { return derivedSpanID("pod-root", uid) }

// AddWrite takes a finished write; writes of pods go to their pod's trace,
// others are ignored.
func (p *Pods) AddWrite(w Write, now time.Time) {
	if w.Object.Resource != "pods" || w.Object.Group != "" || w.Object.Name == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	stage := probes.StagePodWrite
	if w.Method == "POST" && w.Subresource == "" {
		stage = probes.StagePodCreate
	}
	ev := probes.Event{Component: probes.KubeAPIServer, Stage: stage, Probe: stage, Namespace: w.Object.Namespace, Name: w.Object.Name,
		Revision: w.Revision, Start: w.Start, End: w.Committed, Method: w.Method, Path: w.Path, Subresource: w.Subresource}
	n := podName{w.Object.Namespace, w.Object.Name}
	if _, ok := p.started[n]; ok {
		if stage == probes.StagePodWrite {
			// A write after the pod's startup went out (its status, its
			// delete): the write's own trace has it, the startup does not.
			p.a.Refuse(&ev, "after-trace")
			return
		}
		delete(p.started, n) // a new pod of the same name
	}
	p.writes[w.Revision] = w
	p.arrived = append(p.arrived, revAt{w.Revision, now.UnixNano()})
	p.a.Add(ev, now)
}

// Add takes one pod-path event.
func (p *Pods) Add(ev probes.Event, now time.Time) {
	if !ev.InFlight {
		p.locked.Add(ev, now)
	}
}

// Flush emits the pods whose startup is complete and settled, and those
// that waited MaxWait.
func (p *Pods) Flush(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.a.Flush(now)
	// A write joins a trace within its stage's Keep (5 min) and is read
	// until the trace is emitted, at most MaxWait after it opened: past
	// both, what the assembler forgot without a trace (a write of a pod not
	// followed) goes too. An emitted trace's writes went as it was.
	keep := max(p.opts.MaxWait, 5*time.Minute) + time.Minute
	n := 0
	for n < len(p.arrived) && now.Sub(time.Unix(0, p.arrived[n].at)) > keep {
		delete(p.writes, p.arrived[n].rev)
		n++
	}
	p.arrived = p.arrived[n:]
}

func (p *Pods) forget(t *Assembly) {
	if s, ok := t.Data.(*lagsSent); ok && p.started[podName{s.ns, s.name}] == s.uid {
		delete(p.started, podName{s.ns, s.name})
	}
	// Not emitted (evicted at a stop): its writes go with it.
	for _, st := range []string{probes.StagePodCreate, probes.StagePodWrite} {
		for _, e := range t.Events(st) {
			delete(p.writes, e.Revision)
		}
	}
}

// life reads the pod's story out of its assembled trace.
func (p *Pods) life(t *Assembly) *podLife {
	uid, _ := t.Key()
	l := &podLife{uid: uid, opts: &p.opts}
	if c := t.Event(probes.StagePodCreate); c != nil {
		if w, ok := p.writes[c.Revision]; ok {
			l.create = &w
		}
	}
	for _, e := range t.Events(probes.StagePodWrite) {
		if w, ok := p.writes[e.Revision]; ok {
			l.writes = append(l.writes, w)
		}
	}
	for _, st := range []string{probes.StageSchedulerQueue, probes.StageInformer} {
		for _, e := range t.Events(st) {
			l.receives = append(l.receives, *e)
		}
	}
	// The first receipt of each write by each consumer is its lag.
	slices.SortStableFunc(l.receives, func(a, b probes.Event) int { return a.Start.Compare(b.Start) })
	for i := range l.receives {
		if l.receives[i].Component == probes.Kubelet && l.receives[i].Stage == probes.StageInformer && l.kubeletRcv == nil {
			l.kubeletRcv = &l.receives[i]
		}
	}
	for _, e := range t.Events(probes.StageSchedule) {
		l.cycles = append(l.cycles, *e)
	}
	for _, e := range t.Events(probes.StageBind) {
		if !e.Failed {
			l.bind = e
		}
	}
	for _, e := range t.Events(probes.StageSandbox) {
		if !e.Failed {
			l.sandbox = e
		}
	}
	for _, e := range t.Events(probes.StageContainerStart) {
		l.containers = append(l.containers, containerStart{ev: *e, failed: e.Failed})
	}
	for _, e := range t.Events(probes.StageStatusSet) {
		l.statusSets = append(l.statusSets, *e)
	}
	for _, st := range []string{probes.StagePodCreate, probes.StageSchedulerQueue, probes.StageInformer, probes.StageSandbox, probes.StageStatusSet} {
		for _, e := range t.Events(st) {
			if l.ns == "" && e.Namespace != "" && e.Name != "" {
				l.ns, l.name = e.Namespace, e.Name
			}
		}
	}
	return l
}

// startup is what is known of the pod's way to Running.
type startup struct {
	done          bool
	cycle         *probes.Event // the successful scheduling cycle
	bindingWrite  *Write
	lastContainer *containerStart
	started       time.Time // when the kubelet learned the last container started (its CRI reply)
	// runtimeStarted is when the runtime started the last container, from
	// the kubelet's status (zero when it was not read).
	runtimeStarted time.Time
	status         *Write // the status write after the last container started
	missing        []string
	// whole says this agent sees every part of the startup (the API
	// server's and the pod's kubelet's): only then is there a partition.
	whole     bool
	elsewhere string // the node whose agent sees the pod's kubelet, when not this one
}

// startedAt is when the last container started: the runtime's own time
// when the kubelet's status held it, else the kubelet's CRI reply.
func (s *startup) startedAt() time.Time {
	if !s.runtimeStarted.IsZero() {
		return s.runtimeStarted
	}
	return s.started
}

// startedBy says which of the two startedAt is (kpath.started_by).
func (s *startup) startedBy() string {
	if !s.runtimeStarted.IsZero() {
		return "runtime"
	}
	return "cri-reply"
}

func (l *podLife) startup() startup {
	var s startup
	for i := range l.cycles {
		if !l.cycles[i].Failed {
			s.cycle = &l.cycles[i]
		}
	}
	slices.SortFunc(l.writes, func(a, b Write) int { return int(a.Revision - b.Revision) })
	for i := range l.writes {
		w := &l.writes[i]
		if w.Subresource == "binding" && s.bindingWrite == nil {
			s.bindingWrite = w
		}
	}
	for i := range l.containers {
		c := &l.containers[i]
		if !c.failed && (s.lastContainer == nil || c.ev.End.After(s.lastContainer.ev.End)) {
			s.lastContainer = c
		}
	}
	if s.lastContainer != nil {
		s.started = s.lastContainer.ev.End
		s.runtimeStarted = l.runtimeStarted(s.lastContainer)
		// The kubelet's status manager PATCHes pods/status after a sync
		// handed it the status (SetPodStatus); take the first such write
		// after a status set that followed the last container's start.
		for _, set := range l.statusSets {
			if set.Start.Before(s.started) {
				continue
			}
			for i := range l.writes {
				w := &l.writes[i]
				if w.Subresource == "status" && !w.Start.Before(set.Start) {
					s.status = w
					break
				}
			}
			if s.status != nil {
				break
			}
		}
	}
	// What this agent is to see of the pod: the API server's part when it
	// follows one, the kubelet's when the pod is on its node.
	apiserver := l.opts == nil || l.opts.SeesAPIServer == nil || l.opts.SeesAPIServer()
	node := ""
	if s.cycle != nil {
		node = s.cycle.Node
	}
	kubelet := !apiserver || l.opts == nil || l.opts.Node == "" || node == "" || node == l.opts.Node
	s.whole = apiserver && kubelet
	if !kubelet {
		s.elsewhere = node
	}
	for _, m := range []struct {
		mine bool
		have bool
		what string
	}{
		{apiserver, l.create != nil, "create-write"}, {apiserver, s.cycle != nil, "scheduling-cycle"},
		{apiserver, s.bindingWrite != nil, "binding-write"}, {kubelet, l.kubeletRcv != nil, "kubelet-receive"},
		{kubelet, l.sandbox != nil, "sandbox"}, {kubelet, s.lastContainer != nil, "container-start"},
		{apiserver && kubelet, s.status != nil, "status-write"},
	} {
		if m.mine && !m.have {
			s.missing = append(s.missing, m.what)
		}
	}
	s.done = len(s.missing) == 0
	return s
}

// runtimeStarted is when the runtime started the pod's containers, as the
// kubelet's status gives it: the latest StartedAt in the first status after
// the last container's CRI reply whose containers all run, when the probe
// read all of them (it reads two). Zero otherwise.
func (l *podLife) runtimeStarted(last *containerStart) time.Time {
	for _, set := range l.statusSets {
		if set.Start.Before(last.ev.End) || set.Statuses == 0 || set.Statuses > len(set.ContainersStarted) {
			continue
		}
		if slices.ContainsFunc(set.ContainersStarted, time.Time.IsZero) {
			continue // a container not running yet
		}
		latest := slices.MaxFunc(set.ContainersStarted, time.Time.Compare)
		// The runtime started it during the kubelet's start call, or it is
		// another instance of the container (a restart): not this one.
		if latest.Before(last.ev.Start) || latest.After(last.ev.End) {
			return time.Time{}
		}
		return latest
	}
	return time.Time{}
}

// late takes a receipt of an emitted pod: a write of the startup reached
// this consumer only now. Its watch lag goes out as more spans of the
// same trace, made from what the trace kept as it was emitted.
func (p *Pods) late(t *Assembly, ev *probes.Event) {
	s, ok := t.Data.(*lagsSent)
	if !ok || ev.Revision == 0 || ev.Revision > s.lastRev() {
		return
	}
	c, ok := s.commit(ev.Revision)
	if !ok || ev.Start.Before(c) || !s.mark(lagKey{string(ev.Component), ev.Revision}) {
		return
	}
	comp := string(ev.Component)
	sp := podSpan(s.id, s.root, "watch → "+comp, PodWatchLag, comp, c, ev.Start, podAttrs(s.ns, s.name, s.uid), Attribute{AttrRevision, ev.Revision})
	p.emit(PodTrace{UID: s.uid, Namespace: s.ns, Name: s.name, Late: true, Trace: Trace{ID: s.id, Complete: true, Spans: []Span{sp}},
		Stages: []StageTime{{PodWatchLag, comp, ev.Start.Sub(c)}}})
}

// keep is what the trace keeps as it is emitted, for the late lags: the
// startup's writes (through the status write, or the binding when the
// kubelet part is another node's) and the lags it holds.
func (l *podLife) keep(st startup, pt PodTrace) *lagsSent {
	s := &lagsSent{id: pt.Trace.ID, root: podRootID(pt.UID), uid: l.uid, ns: l.ns, name: l.name,
		committed: make([]revAt, 0, 1+len(l.writes))}
	last := int64(0)
	switch {
	case st.status != nil:
		last = st.status.Revision
	case st.elsewhere != "" && st.bindingWrite != nil:
		last = st.bindingWrite.Revision
	}
	if l.create != nil && l.create.Revision <= last {
		s.committed = append(s.committed, revAt{l.create.Revision, l.create.Committed.UnixNano()})
	}
	for _, w := range l.writes {
		if w.Revision <= last {
			s.committed = append(s.committed, revAt{w.Revision, w.Committed.UnixNano()})
		}
	}
	slices.SortFunc(s.committed, func(a, b revAt) int { return cmp.Compare(a.rev, b.rev) })
	s.committed = slices.Clip(slices.CompactFunc(s.committed, func(a, b revAt) bool { return a.rev == b.rev }))
	for _, sp := range pt.Trace.Spans {
		if rev, _ := sp.Attr(AttrRevision).(int64); sp.Attr(AttrStage) == PodWatchLag && rev <= last {
			comp, _ := sp.Attr(AttrComponent).(string)
			s.mark(lagKey{comp, rev})
		}
	}
	return s
}

func (p *Pods) emitTrace(t *Assembly, complete bool) {
	l := p.life(t)
	st := l.startup()
	pt := l.trace(st, p.opts)
	sent := l.keep(st, pt)
	t.Data = sent
	// The assembler sheds the trace's events: its writes go too, and the
	// pod's later writes are not held for it.
	if l.create != nil {
		delete(p.writes, l.create.Revision)
	}
	for _, w := range l.writes {
		delete(p.writes, w.Revision)
	}
	if l.uid != "" && l.name != "" {
		p.started[podName{l.ns, l.name}] = l.uid
	}
	pt.Trace.Complete = complete
	if complete && st.whole && pt.Stages == nil {
		pt.Trace.Complete = false
		p.stats.Disordered++
	}
	for i := range pt.Trace.Spans {
		if pt.Trace.Spans[i].SpanID == podRootID(pt.UID) && pt.UID != "" {
			sp := &pt.Trace.Spans[i]
			sp.Attributes = append(sp.Attributes, Attribute{AttrComplete, pt.Trace.Complete})
			if len(st.missing) > 0 {
				sp.Attributes = append(sp.Attributes, Attribute{AttrMissing, strings.Join(st.missing, ",")})
			}
			if st.elsewhere != "" {
				sp.Attributes = append(sp.Attributes, Attribute{AttrKubeletElsewhere, st.elsewhere})
			}
		}
	}
	p.stats.Traces++
	if !pt.Trace.Complete {
		p.stats.Incomplete++
	} else if st.lastContainer != nil && st.runtimeStarted.IsZero() {
		p.stats.StartedByCRI++
	}
	if len(pt.Trace.Spans) > 0 {
		p.emit(pt)
	}
}

// trace builds the pod's trace: a root over the whole startup, the stage
// partition under it, the probe spans under their stage, and the pod's
// create, binding and status writes with their own spans.
func (l *podLife) trace(st startup, opts PodOptions) PodTrace {
	meta := opts.Meta
	uid := l.uid
	if uid == "" && l.create != nil {
		uid = "unknown:" + l.create.Key + fmt.Sprintf("@%d", l.create.Revision)
	}
	pt := PodTrace{UID: l.uid, Namespace: l.ns, Name: l.name}
	id := PodTraceID(uid)
	root := podRootID(uid)
	tr := Trace{ID: id}
	podAttrs := podAttrs(l.ns, l.name, l.uid)
	var rootAttrs []Attribute
	m, ok := PodMeta{}, false
	if meta != nil && l.uid != "" {
		m, ok = meta(l.uid)
	}
	switch {
	case st.cycle != nil && st.cycle.Node != "":
		rootAttrs = append(rootAttrs, Attribute{AttrNodeName, st.cycle.Node})
	case l.bind != nil && l.bind.Node != "":
		rootAttrs = append(rootAttrs, Attribute{AttrNodeName, l.bind.Node})
	case ok && m.Node != "":
		rootAttrs = append(rootAttrs, Attribute{AttrNodeName, m.Node})
	}
	if ok && m.OwnerKind != "" {
		rootAttrs = append(rootAttrs, Attribute{"k8s." + strings.ToLower(m.OwnerKind) + ".name", m.OwnerName})
	}
	var links []Link
	if ok && m.OwnerKind != "" && l.create != nil && opts.Creator != nil {
		if l.creator == nil {
			c, found := opts.Creator(l.ns, m.OwnerKind, m.OwnerName, l.create.Start)
			if !found {
				c.AfterOwnerWrite = -1
			}
			l.creator = &c
		}
		if c := l.creator; c.Controller != "" {
			rootAttrs = append(rootAttrs, Attribute{AttrCreator, c.Component + "/" + c.Controller})
			if c.AfterOwnerWrite >= 0 {
				rootAttrs = append(rootAttrs, Attribute{AttrAfterOwnerWrite, float64(c.AfterOwnerWrite) / float64(time.Millisecond)})
			}
			links = c.Links
		}
	}
	add := func(parent SpanID, name, stage, comp string, start, end time.Time, extra ...Attribute) SpanID {
		tr.Spans = append(tr.Spans, podSpan(id, parent, name, stage, comp, start, end, podAttrs, extra...))
		return tr.Spans[len(tr.Spans)-1].SpanID
	}
	graft := func(w *Write, parent SpanID) { tr.Spans = append(tr.Spans, regraft(w.Trace, id, parent, podAttrs)...) }

	if l.create != nil {
		end := l.create.Committed
		if st.status != nil {
			end = st.status.Committed
		}
		// The root: emitted only by the agent that saw the create.
		tr.Spans = append(tr.Spans, Span{TraceID: id, SpanID: root, Name: "pod " + l.ns + "/" + l.name + " startup",
			Start: l.create.Start, End: end,
			Attributes: append(append([]Attribute{{AttrComponent, string(probes.KubeAPIServer)}, {AttrStage, "pod-startup"}}, podAttrs...), rootAttrs...),
			Links:      links})
		graft(l.create, root)
	}
	// Watch delivery of the pod's writes to each consumer.
	committed := map[int64]time.Time{}
	if l.create != nil {
		committed[l.create.Revision] = l.create.Committed
	}
	for _, w := range l.writes {
		committed[w.Revision] = w.Committed
	}
	lagged := map[string]bool{}
	for _, r := range l.receives {
		c, ok := committed[r.Revision]
		k := fmt.Sprintf("%s/%d/%d", r.Component, r.PID, r.Revision)
		if !ok || lagged[k] || r.Start.Before(c) {
			continue
		}
		lagged[k] = true
		pt.Stages = append(pt.Stages, StageTime{PodWatchLag, string(r.Component), r.Start.Sub(c)})
		add(root, "watch → "+string(r.Component), PodWatchLag, string(r.Component), c, r.Start,
			Attribute{AttrRevision, r.Revision})
	}
	lags := pt.Stages
	pt.Stages = nil

	// The probe spans.
	for _, c := range l.cycles {
		extra := []Attribute{{AttrSucceeded, !c.Failed}}
		if c.Node != "" && !c.Failed {
			extra = append(extra, Attribute{AttrNodeName, c.Node})
		}
		add(root, "scheduling cycle", probes.StageSchedule, string(probes.KubeScheduler), c.Start, c.End, extra...)
	}
	bindParent := root
	if l.bind != nil {
		bindParent = add(root, "bind to "+l.bind.Node, probes.StageBind, string(probes.KubeScheduler), l.bind.Start, l.bind.End, Attribute{AttrNodeName, l.bind.Node})
	}
	if st.bindingWrite != nil {
		graft(st.bindingWrite, bindParent)
	}
	if l.sandbox != nil {
		add(root, "create sandbox", probes.StageSandbox, string(probes.Kubelet), l.sandbox.Start, l.sandbox.End)
	}
	for i, c := range l.containers {
		cs := add(root, "start container "+c.ev.Container, probes.StageContainerStart, string(probes.Kubelet), c.ev.Start, c.ev.End,
			Attribute{"k8s.container.name", c.ev.Container}, Attribute{AttrSucceeded, !c.failed})
		if st.lastContainer == &l.containers[i] && !st.runtimeStarted.IsZero() {
			// The runtime's own start, and its reply to the kubelet after it.
			add(cs, "runtime started "+c.ev.Container+", CRI reply", probes.StageCRIStart, string(probes.Kubelet), st.runtimeStarted, c.ev.End,
				Attribute{"k8s.container.name", c.ev.Container})
		}
	}
	if st.status != nil {
		graft(st.status, root)
	}

	// The partition, when every boundary is known and in causal order.
	if st.done && st.whole && !l.create.StorageWrite.IsZero() && !l.create.EtcdRequest.IsZero() {
		bounds := []time.Time{l.create.Start}
		for _, p := range podPartition {
			bounds = append(bounds, p.end(l, &st))
		}
		ordered := true
		for i := 1; i < len(bounds); i++ {
			if bounds[i].Before(bounds[i-1]) {
				ordered = false
			}
		}
		if ordered {
			for i, p := range podPartition {
				pt.Stages = append(pt.Stages, StageTime{p.stage, string(p.comp), bounds[i+1].Sub(bounds[i])})
				extra := []Attribute{{"kpath.partition", true}}
				if p.stage == PodContainerStart {
					extra = append(extra, Attribute{AttrStartedBy, st.startedBy()})
				}
				add(root, p.stage, p.stage, string(p.comp), bounds[i], bounds[i+1], extra...)
			}
		}
	}
	if pt.Stages != nil {
		pt.Stages = append(pt.Stages, lags...)
	}
	// The root spans everything under it; without the create (a node
	// agent) there is no root here and the spans hang under the one the
	// control-plane agent emits.
	for i := range tr.Spans {
		if tr.Spans[i].SpanID == root {
			for _, s := range tr.Spans {
				tr.Spans[i].End = maxT(tr.Spans[i].End, s.End)
			}
		}
	}
	pt.Trace = tr
	return pt
}

// regraft copies a write's spans into another trace under parent, with new
// span IDs, adding attrs.
func regraft(t Trace, id TraceID, parent SpanID, attrs []Attribute) []Span {
	remap := map[SpanID]SpanID{}
	newID := func(old SpanID) SpanID {
		if n, ok := remap[old]; ok {
			return n
		}
		h := sha256.New()
		h.Write(id[:])
		h.Write(old[:])
		var n SpanID
		copy(n[:], h.Sum(nil))
		remap[old] = n
		return n
	}
	out := make([]Span, 0, len(t.Spans))
	for _, s := range t.Spans {
		c := s
		c.TraceID = id
		c.SpanID = newID(s.SpanID)
		if s.Parent == (SpanID{}) {
			c.Parent = parent
		} else {
			c.Parent = newID(s.Parent)
		}
		c.Attributes = append(slices.Clone(s.Attributes), Attribute{"kpath.write_trace", fmt.Sprintf("%x", t.ID)})
		for _, a := range attrs {
			if c.Attr(a.Key) == nil {
				c.Attributes = append(c.Attributes, a)
			}
		}
		out = append(out, c)
	}
	return out
}

func maxT(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// podAttrs are the attributes of every span of a pod's trace.
func podAttrs(ns, name, uid string) []Attribute {
	a := []Attribute{{AttrKey, "/registry/pods/" + ns + "/" + name}, {AttrResource, "pods"}, {AttrNamespace, ns}, {AttrPodName, name}}
	if uid != "" {
		a = append(a, Attribute{AttrPodUID, uid})
	}
	return a
}

// podSpan is one span of a pod's trace. Its ID is derived from what it
// is, so the same span made again (a late lag, another agent) is the same.
func podSpan(id TraceID, parent SpanID, name, stage, comp string, start, end time.Time, podAttrs []Attribute, extra ...Attribute) Span {
	h := sha256.New()
	fmt.Fprintf(h, "%x|%x|%s|%s|%d|%d", id, parent, name, stage, start.UnixNano(), end.UnixNano())
	var sid SpanID
	copy(sid[:], h.Sum(nil))
	attrs := append(append(make([]Attribute, 0, 2+len(podAttrs)+len(extra)), Attribute{AttrComponent, comp}, Attribute{AttrStage, stage}), podAttrs...)
	return Span{TraceID: id, SpanID: sid, Parent: parent, Name: name, Start: start, End: end, Attributes: append(attrs, extra...)}
}
