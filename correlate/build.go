package correlate

import (
	"strings"
	"time"

	"github.com/kpath/kpath/probes"
)

// spanEvent is the k-th event that makes one of stage si's spans: its
// own, with the end an ender gives it (into buf), or the one a Stands join
// made for it; nil past the last.
func (t *Assembly) spanEvent(si, k int, buf *probes.Event) *probes.Event {
	j := t.a.stages[si].join
	switch {
	case j.Ends != "" || j.NoSpan:
		return nil // it ends another stage's span, or says something of the trace
	case j.Stands != "" && t.stood != nil:
		return nil // it is the start of the span it stands for
	case t.one[si] == nil:
		if k == 0 && t.stood != nil && t.stoodAt == si {
			return t.stood
		}
		return nil
	case k >= t.n(si):
		return nil
	}
	e := &t.at(si, k).ev
	if k == 0 {
		if end := t.ender(si); end != nil && !end.Start.Before(e.Start) {
			*buf = *e
			for _, f := range j.Attrs {
				buf.CopyField(f, end) // what the ender knows of the span (the apply's raft ID)
			}
			buf.End = end.Start
			return buf
		}
	}
	return e
}

// Trace builds the spans of t: the first of the shape's Roots present is
// the root; every other span hangs under the first of its Join's Under
// stages present, else under the root. root, when set, is the root span's
// ID (one others derive to hang their spans under); shared are the
// attributes every span carries.
func (t *Assembly) Trace(id TraceID, root SpanID, shared []Attribute) Trace {
	return t.build(id, root, SpanID{}, shared)
}

// TraceUnder builds the spans of t as part of a trace emitted elsewhere:
// its root hangs under parent (a write's root, which its agent derives
// alike).
func (t *Assembly) TraceUnder(id TraceID, parent SpanID, shared []Attribute) Trace {
	return t.build(id, SpanID{}, parent, shared)
}

func (t *Assembly) build(id TraceID, root, under SpanID, shared []Attribute) Trace {
	a := t.a
	var buf probes.Event
	n := 1
	for si := range a.stages {
		n += t.n(si)
	}
	tr := Trace{ID: id, Spans: make([]Span, 0, n)}
	pool := make([]Attribute, 0, n*(4+len(shared)))
	var ids [maxStages]SpanID
	add := func(e *probes.Event, j *probes.Join, parent SpanID, name string, start, end time.Time) SpanID {
		s := Span{TraceID: id, SpanID: spanID(id, e, name), Parent: parent, Name: name, Start: start, End: end}
		if parent == under && root != (SpanID{}) {
			s.SpanID = root
		}
		from := len(pool)
		pool = append(pool,
			Attribute{AttrComponent, box(string(e.Component))},
			Attribute{AttrStage, box(e.Stage)},
			Attribute{AttrProbe, box(e.Probe)},
		)
		pool = append(pool, shared...)
		if j != nil {
			pool = appendFieldAttrs(pool, e, j.Attrs)
		}
		s.Attributes = pool[from:len(pool):len(pool)]
		tr.Spans = append(tr.Spans, s)
		return s.SpanID
	}
	// The spans of the stages with several events, by event: an event
	// found from one of them hangs under that one.
	var each [maxStages][]SpanID
	span := func(si, k int, e *probes.Event, parent SpanID) {
		j := a.stages[si].join
		sid := add(e, j, parent, a.names.of(e, j), e.Start, e.End)
		if ids[si] == (SpanID{}) {
			ids[si] = sid
		}
		if j.Many && t.n(si) > 1 {
			if each[si] == nil {
				each[si] = make([]SpanID, t.n(si))
			}
			each[si][k] = sid
		}
		if j.Splits != "" && e.Opened.After(e.Start) {
			f := *e
			f.Stage = j.Splits
			add(&f, nil, sid, j.Splits, e.Start, e.Opened)
		}
	}
	rootSI := -1
	for _, si := range a.roots {
		if e := t.spanEvent(si, 0, &buf); e != nil {
			rootSI = si
			span(si, 0, e, under)
			root = ids[si]
			break
		}
	}
	for si := range a.stages {
		for k := 0; ; k++ {
			if si == rootSI && k == 0 {
				continue
			}
			e := t.spanEvent(si, k, &buf)
			if e == nil {
				break
			}
			parent := root
			for _, u := range a.stages[si].under {
				if p := ids[u]; p != (SpanID{}) {
					parent = p
					if each[u] != nil {
						if k := t.foundFrom(si, u, e); k >= 0 {
							parent = each[u][k]
						}
					}
					break
				}
			}
			span(si, k, e, parent)
		}
	}
	return tr
}

// foundFrom is which event of stage u (of several) e, of stage si, is
// found from by one of its relations; -1 for none.
func (t *Assembly) foundFrom(si, u int, e *probes.Event) int {
	j := t.a.stages[si].join
	for ri := range j.Found {
		r := &j.Found[ri]
		if t.a.stages[si].rels[ri].of != u {
			continue
		}
		for k := range t.n(u) {
			o := &t.at(u, k).ev
			if mine(r, e) == theirs(r, o) && r.Holds(e, o, time.Time{}, time.Time{}) {
				return k
			}
		}
	}
	return -1
}

// spanNames keeps the names made from templates: the same few names come
// again for every write ("POST /api/v1/namespaces/NS/configmaps"), and
// building each anew is an allocation a span. Keyed by the template and
// its first two fields' values; names of more fields are built each time.
type spanNames struct {
	m      map[spanNameKey]string
	fields map[*probes.Join][]probes.Field // each template's fields, in order
}

type spanNameKey struct {
	tmpl *probes.Join
	a, b string
}

const maxSpanNames = 4096

func (c *spanNames) of(e *probes.Event, j *probes.Join) string {
	if e.Row != nil && e.Row.Span != "" && e.Stage == j.Stage || e.Stage != j.Stage && j.StandsSpan != "" ||
		!strings.Contains(j.Span, "{") {
		return spanName(e, j)
	}
	fs, ok := c.fields[j]
	if !ok {
		for t := j.Span; ; {
			i, k := strings.IndexByte(t, '{'), strings.IndexByte(t, '}')
			if i < 0 || k < i {
				break
			}
			f, _ := probes.FieldNamed(t[i+1 : k])
			fs, t = append(fs, f), t[k+1:]
		}
		if c.fields == nil {
			c.fields = map[*probes.Join][]probes.Field{}
		}
		c.fields[j] = fs
	}
	if len(fs) > 2 {
		return spanName(e, j)
	}
	k := spanNameKey{tmpl: j}
	if len(fs) > 0 {
		k.a = e.StringField(fs[0])
	}
	if len(fs) > 1 {
		k.b = e.StringField(fs[1])
	}
	if n, ok := c.m[k]; ok {
		return n
	}
	if c.m == nil || len(c.m) >= maxSpanNames {
		c.m = make(map[spanNameKey]string, 64) // the names in use come back at once
	}
	n := spanName(e, j)
	c.m[k] = n
	return n
}

// spanName is the row's name for its spans, else its join's with {field}
// replaced by the event's values, else the stage.
func spanName(e *probes.Event, j *probes.Join) string {
	if e.Row != nil && e.Row.Span != "" && e.Stage == j.Stage {
		return e.Row.Span
	}
	if e.Stage != j.Stage && j.StandsSpan != "" {
		return j.StandsSpan
	}
	tmpl := j.Span
	if tmpl == "" {
		return j.Stage
	}
	if !strings.Contains(tmpl, "{") {
		return tmpl
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(tmpl, '{')
		k := strings.IndexByte(tmpl, '}')
		if i < 0 || k < i {
			b.WriteString(tmpl)
			return b.String()
		}
		b.WriteString(tmpl[:i])
		f, _ := probes.FieldNamed(tmpl[i+1 : k])
		b.WriteString(e.StringField(f))
		tmpl = tmpl[k+1:]
	}
}

// appendFieldAttrs adds the span attributes of the fields a join lists
// (probes.AttrKeys) that the event has.
func appendFieldAttrs(to []Attribute, e *probes.Event, fs []probes.Field) []Attribute {
	for _, f := range fs {
		k := probes.AttrKeys[f]
		switch f {
		case probes.FieldCode:
			if e.Code != 0 {
				to = append(to, Attribute{k, int64(e.Code)})
			}
		case probes.FieldRaftID:
			if e.RaftID != 0 {
				to = append(to, Attribute{k, int64(e.RaftID)})
			}
		case probes.FieldSucceeded:
			if e.SucceededSet {
				to = append(to, Attribute{k, e.Succeeded})
			}
		default:
			if v := e.StringField(f); v != "" {
				to = append(to, Attribute{k, box(v)})
			}
		}
	}
	return to
}
