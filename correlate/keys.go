package correlate

import "strings"

// Object is what an etcd key says about the object stored under it.
type Object struct {
	Group     string // "" for the core group and for most built-in groups (they store without it)
	Resource  string // plural, as in the key: "pods", "configmaps"
	Namespace string // "" for cluster-scoped objects
	Name      string
}

// ParseKey reads an apiserver etcd key: /registry/RESOURCE/[NS/]NAME, or
// /registry/GROUP/RESOURCE/[NS/]NAME for groups stored with their name
// (group names have a dot; resources never do). The prefix before the
// resource need not be /registry (--etcd-prefix); it is whatever comes
// before the second-to-last or third-to-last segment, so keys are read
// from the end.
func ParseKey(key string) Object {
	// Split into at most 6 parts without allocating: every write's key.
	var buf [6]string
	parts := buf[:0]
	rest := strings.Trim(key, "/")
	for rest != "" || len(parts) == 0 {
		if len(parts) == len(buf) {
			return Object{}
		}
		var p string
		p, rest, _ = strings.Cut(rest, "/")
		parts = append(parts, p)
		if rest == "" {
			break
		}
	}
	if len(parts) < 3 || parts[0] == "" {
		return Object{}
	}
	parts = parts[1:] // the prefix
	var o Object
	if strings.Contains(parts[0], ".") && len(parts) >= 3 {
		o.Group, parts = parts[0], parts[1:]
	}
	o.Resource = parts[0]
	switch len(parts) {
	case 2:
		o.Name = parts[1]
	case 3:
		o.Namespace, o.Name = parts[1], parts[2]
	default:
		return Object{}
	}
	return o
}

// Kind is the singular of the resource, lower case, as OpenTelemetry's
// k8s.<kind>.name attributes spell it.
func (o Object) Kind() string {
	r := o.Resource
	switch {
	case r == "endpoints":
		return r
	case strings.HasSuffix(r, "sses"):
		return r[:len(r)-2]
	case strings.HasSuffix(r, "ies"):
		return r[:len(r)-3] + "y"
	case strings.HasSuffix(r, "s"):
		return r[:len(r)-1]
	}
	return r
}

// Attributes are the k8s.* and kpath.resource attributes of the object.
func (o Object) Attributes() []Attribute { return o.AppendAttributes(nil) }

// AppendAttributes appends o's attributes to dst.
func (o Object) AppendAttributes(dst []Attribute) []Attribute {
	if o.Resource == "" {
		return dst
	}
	dst = append(dst, Attribute{AttrResource, box(o.Resource)})
	if o.Namespace != "" {
		dst = append(dst, Attribute{AttrNamespace, box(o.Namespace)})
	}
	if o.Name != "" {
		dst = append(dst, Attribute{nameKey(o), o.Name})
	}
	return dst
}
