package correlate

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"sync"
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

// Pods follows each pod from its create request to Running: the writes of
// the pod (create, binding, status) from Writes, and the watch, scheduler and
// kubelet events from the probes, joined by UID (and by namespace/name and
// resourceVersion where the UID is not at hand). The trace ID comes from the
// pod UID, so agents on different nodes put their spans in the same trace.
type Pods struct {
	opts PodOptions
	emit func(PodTrace)

	mu     sync.Mutex
	byUID  map[string]*podLife
	byName map[string][]*podLife // "ns/name" → lives in creation order
	writes map[string][]Write    // "ns/name" → writes not yet claimed by a life
	// orphans are events of pods not followed yet: the create's write is
	// reported only when its request returns, after the scheduler has seen
	// the pod. A new life adopts them; the rest expire, counted.
	orphans []piece
	stats   PodStats
}

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

type podLife struct {
	uid, ns, name string
	seen, changed time.Time
	emitted       bool

	create     *Write
	writes     []Write // later writes of this pod, by revision
	receives   []probes.Event
	cycles     []probes.Event
	bind       *probes.Event // scheduler.bind, a detail row
	kubeletRcv *probes.Event
	sandbox    *probes.Event
	containers []containerStart
	statusSets []probes.Event  // the kubelet's status after each sync (SetPodStatus)
	lagsSent   map[string]bool // watch lags emitted, by lagKey
	lastRev    int64           // the last revision of the emitted startup (its status write)
}

// NewPods returns a pod correlator calling emit with each pod's startup.
// emit runs with the lock held.
func NewPods(opts PodOptions, emit func(PodTrace)) *Pods {
	opts = opts.WithDefaults()
	return &Pods{opts: opts, emit: emit, byUID: map[string]*podLife{}, byName: map[string][]*podLife{},
		writes: map[string][]Write{}}
}

// Stats returns the counters.
func (p *Pods) Stats() PodStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// orphanTTL is how long an event of an unknown pod waits for its create.
const orphanTTL = 30 * time.Second

// PodTraceID names the trace of a pod's startup.
func PodTraceID(uid string) TraceID {
	h := sha256.Sum256([]byte("kpath/pod\x00" + uid))
	var id TraceID
	copy(id[:], h[:])
	return id
}

// podRootID is the root span's ID: derived, so an agent that does not see
// the create (a node agent) can still hang its spans under it.
func podRootID(uid string) SpanID {
	h := sha256.Sum256([]byte("kpath/pod-root\x00" + uid))
	var id SpanID
	copy(id[:], h[:])
	return id
}

func nsName(ns, name string) string { return ns + "/" + name }

// AddWrite takes a finished write; writes of pods are kept, others ignored.
func (p *Pods) AddWrite(w Write, now time.Time) {
	if w.Object.Resource != "pods" || w.Object.Group != "" || w.Object.Name == "" {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	k := nsName(w.Object.Namespace, w.Object.Name)
	if w.Method == "POST" && w.Subresource == "" {
		// A create: a new life of this name, its UID learned from the
		// first probe that carries both.
		wc := w
		var l *podLife
		if ls := p.byName[k]; len(ls) > 0 && ls[len(ls)-1].create == nil && !ls[len(ls)-1].emitted {
			l = ls[len(ls)-1] // met first through a probe that carried its name
		} else {
			l = &podLife{ns: w.Object.Namespace, name: w.Object.Name, seen: now}
			p.byName[k] = append(p.byName[k], l)
		}
		l.create, l.changed = &wc, now
		p.adopt(l, now)
		p.evict(now)
		return
	}
	if l := p.lifeAt(k, w.Revision); l != nil {
		l.writes = append(l.writes, w)
		l.changed = now
		return
	}
	p.writes[k] = append(p.writes[k], w)
}

// lifeAt is the life of ns/name that a write at rev belongs to: the last
// one created at or before rev.
func (p *Pods) lifeAt(k string, rev int64) *podLife {
	ls := p.byName[k]
	for i := len(ls) - 1; i >= 0; i-- {
		if ls[i].create != nil && ls[i].create.Revision <= rev {
			return ls[i]
		}
	}
	return nil
}

// adopt gives a new life the writes and receives that came before it.
func (p *Pods) adopt(l *podLife, now time.Time) {
	k := nsName(l.ns, l.name)
	keep := p.writes[k][:0]
	for _, w := range p.writes[k] {
		if w.Revision >= l.create.Revision {
			l.writes = append(l.writes, w)
		} else {
			keep = append(keep, w)
		}
	}
	p.writes[k] = keep
	if len(keep) == 0 {
		delete(p.writes, k)
	}
	p.adoptOrphans(l, now)
}

// adoptOrphans hands a life the orphaned events that name it, by UID or by
// namespace/name (learning its UID from them).
func (p *Pods) adoptOrphans(l *podLife, now time.Time) {
	if len(p.orphans) == 0 {
		return
	}
	var mine []probes.Event
	keep := p.orphans[:0]
	for _, o := range p.orphans {
		e := o.ev
		byUID := l.uid != "" && e.UID == l.uid
		byName := e.Namespace == l.ns && e.Name == l.name && (l.uid == "" || e.UID == "" || e.UID == l.uid)
		if byUID || byName {
			mine = append(mine, e)
			continue
		}
		keep = append(keep, o)
	}
	p.orphans = keep
	for i := range mine {
		if l.uid == "" && mine[i].UID != "" {
			l.uid = mine[i].UID
			p.byUID[l.uid] = l
		}
	}
	for i := range mine {
		p.place(l, mine[i], now)
	}
}

// life finds or makes the life an event belongs to.
func (p *Pods) life(ev *probes.Event, now time.Time) *podLife {
	if ev.UID != "" {
		if l, ok := p.byUID[ev.UID]; ok {
			if l.ns == "" && ev.Namespace != "" {
				l.ns = ev.Namespace
			}
			return l
		}
	}
	if ev.Namespace != "" && ev.Name != "" {
		ls := p.byName[nsName(ev.Namespace, ev.Name)]
		// The newest life without a UID yet, or with this UID.
		for i := len(ls) - 1; i >= 0; i-- {
			if ls[i].uid == "" || ls[i].uid == ev.UID {
				if ev.UID != "" && ls[i].uid == "" {
					ls[i].uid = ev.UID
					p.byUID[ev.UID] = ls[i]
					p.adoptOrphans(ls[i], now)
				}
				return ls[i]
			}
		}
	}
	// A pod whose create this agent did not see (a node agent, or a pod
	// created before the agent started): followed from when it reaches a
	// scheduler or a node, not from a resync of a pod long running.
	switch {
	case ev.UID == "":
		return nil
	case ev.Stage == probes.StageSchedule, ev.Stage == probes.StageSandbox,
		ev.Stage == probes.StageInformer && ev.Component == probes.Kubelet:
	default:
		return nil
	}
	l := &podLife{uid: ev.UID, ns: ev.Namespace, name: ev.Name, seen: now, changed: now}
	p.byUID[ev.UID] = l
	if l.ns != "" && l.name != "" {
		p.byName[nsName(l.ns, l.name)] = append(p.byName[nsName(l.ns, l.name)], l)
	}
	p.adoptOrphans(l, now)
	p.evict(now)
	return l
}

// Add takes one pod-path event.
func (p *Pods) Add(ev probes.Event, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ev.InFlight {
		return
	}
	if ev.Stage == probes.StageWatchCache {
		return // the watch cache's event has no consumer; lags are measured at the reflectors
	}
	l := p.life(&ev, now)
	if l == nil {
		p.orphans = append(p.orphans, piece{ev, now})
		return
	}
	p.place(l, ev, now)
}

func (p *Pods) place(l *podLife, ev probes.Event, now time.Time) {
	named := l.ns != "" && l.name != ""
	if l.ns == "" {
		l.ns = ev.Namespace
	}
	if l.name == "" {
		l.name = ev.Name
	}
	if !named && l.ns != "" && l.name != "" {
		// Met first through a probe that carries only the UID (the
		// scheduling cycle): now the create's write can find it.
		k := nsName(l.ns, l.name)
		p.byName[k] = append(p.byName[k], l)
	}
	l.changed = now
	switch ev.Stage {
	case probes.StageInformer, probes.StageSchedulerQueue:
		if ev.Component == probes.Kubelet && l.kubeletRcv == nil {
			e := ev
			l.kubeletRcv = &e
		}
		l.receives = append(l.receives, ev)
		if l.emitted && ev.Revision != 0 && ev.Revision <= l.lastRev {
			// A write of the startup reached this consumer only now.
			p.emitLateLags(l)
		}
	case probes.StageSchedule:
		l.cycles = append(l.cycles, ev)
	case probes.StageBind:
		if !ev.Failed {
			e := ev
			l.bind = &e
		}
	case probes.StageSandbox:
		if !ev.Failed {
			e := ev
			l.sandbox = &e
		}
	case probes.StageContainerStart:
		l.containers = append(l.containers, containerStart{ev: ev, failed: ev.Failed})
	case probes.StageStatusSet:
		l.statusSets = append(l.statusSets, ev)
	}
}

// Flush emits the pods whose startup is complete and settled, and those
// that waited MaxWait.
func (p *Pods) Flush(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for uid, l := range p.byUID {
		p.maybeEmit(l, now)
		if l.emitted {
			delete(p.byUID, uid)
		}
	}
	for k, ls := range p.byName {
		for _, l := range ls {
			if l.uid == "" {
				p.maybeEmit(l, now)
			}
		}
		ls = slices.DeleteFunc(ls, func(l *podLife) bool { return l.emitted && now.Sub(l.changed) > p.opts.MaxWait })
		if len(ls) == 0 {
			delete(p.byName, k)
		} else {
			p.byName[k] = ls
		}
	}
	n := len(p.orphans)
	p.orphans = slices.DeleteFunc(p.orphans, func(o piece) bool { return now.Sub(o.seen) > orphanTTL })
	p.stats.Orphans += uint64(n - len(p.orphans))
	for k, ws := range p.writes {
		ws = slices.DeleteFunc(ws, func(w Write) bool { return now.Sub(w.Committed) > p.opts.MaxWait })
		if len(ws) == 0 {
			delete(p.writes, k)
		} else {
			p.writes[k] = ws
		}
	}
}

func (p *Pods) maybeEmit(l *podLife, now time.Time) {
	if l.emitted {
		return
	}
	st := l.startup()
	switch {
	case st.done && now.Sub(l.changed) >= p.opts.Settle:
		p.emitLife(l, st, true)
	case now.Sub(l.seen) >= p.opts.MaxWait:
		p.emitLife(l, st, false)
	}
}

func (p *Pods) evict(now time.Time) {
	if len(p.byUID) <= p.opts.MaxPending {
		return
	}
	var oldest *podLife
	for _, l := range p.byUID {
		if !l.emitted && (oldest == nil || l.seen.Before(oldest.seen)) {
			oldest = l
		}
	}
	if oldest != nil {
		p.stats.Evicted++
		p.emitLife(oldest, oldest.startup(), false)
		delete(p.byUID, oldest.uid)
	}
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
	for _, m := range []struct {
		have bool
		what string
	}{
		{l.create != nil, "create-write"}, {s.cycle != nil, "scheduling-cycle"},
		{s.bindingWrite != nil, "binding-write"}, {l.kubeletRcv != nil, "kubelet-receive"}, {l.sandbox != nil, "sandbox"},
		{s.lastContainer != nil, "container-start"}, {s.status != nil, "status-write"},
	} {
		if !m.have {
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

// newLags marks the watch lags among spans as emitted and returns those
// that were not yet: one consumer's receipt of one write of the startup.
func (l *podLife) newLags(spans []Span) []Span {
	var fresh []Span
	for _, s := range spans {
		if rev, _ := s.Attr(AttrRevision).(int64); s.Attr(AttrStage) != PodWatchLag || rev > l.lastRev {
			continue // not a lag, or a lag of a write after the startup
		}
		k := fmt.Sprint(s.Attr(AttrComponent), "@", s.Attr(AttrRevision))
		if !l.lagsSent[k] {
			l.lagsSent[k] = true
			fresh = append(fresh, s)
		}
	}
	return fresh
}

// emitLateLags emits the watch lags of an emitted pod that its trace does
// not hold yet, as more spans of the same trace.
func (p *Pods) emitLateLags(l *podLife) {
	full := l.trace(l.startup(), p.opts.Meta)
	late := PodTrace{UID: full.UID, Namespace: full.Namespace, Name: full.Name, Late: true, Trace: Trace{ID: full.Trace.ID, Complete: true}}
	for _, s := range l.newLags(full.Trace.Spans) {
		late.Trace.Spans = append(late.Trace.Spans, s)
		comp, _ := s.Attr(AttrComponent).(string)
		late.Stages = append(late.Stages, StageTime{PodWatchLag, comp, s.End.Sub(s.Start)})
	}
	if len(late.Trace.Spans) > 0 {
		p.emit(late)
	}
}

func (p *Pods) emitLife(l *podLife, st startup, complete bool) {
	l.emitted = true
	pt := l.trace(st, p.opts.Meta)
	l.lagsSent = map[string]bool{}
	if st.status != nil {
		l.lastRev = st.status.Revision
	}
	l.newLags(pt.Trace.Spans) // what the trace holds now is sent
	pt.Trace.Complete = complete
	if complete && pt.Stages == nil {
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
		}
	}
	p.stats.Traces++
	if !pt.Trace.Complete {
		p.stats.Incomplete++
	} else if st.runtimeStarted.IsZero() {
		p.stats.StartedByCRI++
	}
	if len(pt.Trace.Spans) > 0 {
		p.emit(pt)
	}
}

// trace builds the pod's trace: a root over the whole startup, the stage
// partition under it, the probe spans under their stage, and the pod's
// create, binding and status writes with their own spans.
func (l *podLife) trace(st startup, meta func(string) (PodMeta, bool)) PodTrace {
	uid := l.uid
	if uid == "" && l.create != nil {
		uid = "unknown:" + l.create.Key + fmt.Sprintf("@%d", l.create.Revision)
	}
	pt := PodTrace{UID: l.uid, Namespace: l.ns, Name: l.name}
	id := PodTraceID(uid)
	root := podRootID(uid)
	tr := Trace{ID: id}
	podAttrs := []Attribute{{AttrKey, "/registry/pods/" + l.ns + "/" + l.name}, {AttrResource, "pods"}, {AttrNamespace, l.ns}, {AttrPodName, l.name}}
	if l.uid != "" {
		podAttrs = append(podAttrs, Attribute{AttrPodUID, l.uid})
	}
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
	add := func(parent SpanID, name, stage, comp string, start, end time.Time, extra ...Attribute) SpanID {
		h := sha256.New()
		fmt.Fprintf(h, "%x|%x|%s|%s|%d|%d", id, parent, name, stage, start.UnixNano(), end.UnixNano())
		var sid SpanID
		copy(sid[:], h.Sum(nil))
		attrs := append([]Attribute{{AttrComponent, comp}, {AttrStage, stage}}, podAttrs...)
		tr.Spans = append(tr.Spans, Span{TraceID: id, SpanID: sid, Parent: parent, Name: name, Start: start, End: end,
			Attributes: append(attrs, extra...)})
		return sid
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
			Attributes: append(append([]Attribute{{AttrComponent, string(probes.KubeAPIServer)}, {AttrStage, "pod-startup"}}, podAttrs...), rootAttrs...)})
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
	if st.done && !l.create.StorageWrite.IsZero() && !l.create.EtcdRequest.IsZero() {
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
