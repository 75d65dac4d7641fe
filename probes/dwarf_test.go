package probes

import (
	"debug/buildinfo"
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The struct offsets the catalogue and the goroutine table hard-code, each
// against the DWARF of the lab's normal builds. Release builds carry no
// DWARF: there the same offsets hold because the module versions match
// (the rows' version ranges).
type dwarfCheck struct {
	bin, typ, path string // path: dot-separated fields; "" = the struct's size
	want           int64
	row            string
}

var dwarfChecks = []dwarfCheck{
	// apiserver.request.*: *http.Request Method @0, URL @16, url.URL.Path @56.
	{"kube-apiserver", "net/http.Request", "Method", 0, "apiserver.request.*"},
	{"kube-apiserver", "net/http.Request", "URL", 16, "apiserver.request.*"},
	{"kube-apiserver", "net/url.URL", "Path", 56, "apiserver.request.*"},
	// OptimisticPut's results, in register order: KV, Succeeded, Revision
	// (RAX, RBX, RCX), which apiserver.etcd.done reads where the store saved them.
	{"kube-apiserver", "go.etcd.io/etcd/client/v3/kubernetes.PutResponse", "Succeeded", 8, "apiserver.etcd.done"},
	{"kube-apiserver", "go.etcd.io/etcd/client/v3/kubernetes.PutResponse", "Revision", 16, "apiserver.etcd.done"},
	{"kube-apiserver", "go.etcd.io/etcd/client/v3/kubernetes.DeleteResponse", "Succeeded", 8, "apiserver.etcd.done"},
	{"kube-apiserver", "go.etcd.io/etcd/client/v3/kubernetes.DeleteResponse", "Revision", 16, "apiserver.etcd.done"},
	// The watch cache's event.
	{"kube-apiserver", "k8s.io/apiserver/pkg/storage/cacher.watchCacheEvent", "Object", 24 - 8, "apiserver.watch.cache"},
	{"kube-apiserver", "k8s.io/apiserver/pkg/storage/cacher.watchCacheEvent", "Key", 80, "apiserver.watch.cache"},
	{"kube-apiserver", "k8s.io/apiserver/pkg/storage/cacher.watchCacheEvent", "ResourceVersion", 96, "apiserver.watch.cache"},
	// Object metadata, in the internal and the versioned Pod.
	{"kube-apiserver", "k8s.io/kubernetes/pkg/apis/core.Pod", "ObjectMeta.Name", objName, "objMeta"},
	{"kube-apiserver", "k8s.io/kubernetes/pkg/apis/core.Pod", "ObjectMeta.Namespace", objNamespace, "objMeta"},
	{"kube-apiserver", "k8s.io/kubernetes/pkg/apis/core.Pod", "ObjectMeta.UID", objUID, "objMeta"},
	{"kubelet", "k8s.io/api/core/v1.Pod", "ObjectMeta.Name", objName, "objMeta"},
	{"kubelet", "k8s.io/api/core/v1.Pod", "ObjectMeta.Namespace", objNamespace, "objMeta"},
	{"kubelet", "k8s.io/api/core/v1.Pod", "ObjectMeta.UID", objUID, "objMeta"},
	{"kubelet", "k8s.io/api/core/v1.Pod", "ObjectMeta.ResourceVersion", objRV, "objRevision"},
	// etcd's request and response structs, and the apply's txn.
	{"etcd", "google.golang.org/grpc.UnaryServerInfo", "FullMethod", 16, "etcd.request.rpc"},
	// kube-scheduler: the queued pod, the cycle's result in register order.
	{"kube-scheduler", "k8s.io/kubernetes/pkg/scheduler/framework.QueuedPodInfo", "PodInfo", 0, "scheduler.cycle"},
	{"kube-scheduler", "k8s.io/kubernetes/pkg/scheduler/framework.PodInfo", "Pod", 0, "scheduler.cycle"},
	{"kube-scheduler", "k8s.io/kubernetes/pkg/scheduler.ScheduleResult", "SuggestedHost", 0, "scheduler.cycle.done"},
	{"kube-scheduler", "k8s.io/api/core/v1.Pod", "ObjectMeta.UID", objUID, "scheduler.*"},
	// kubelet: the container being started, the pod status and its times.
	{"kubelet", "k8s.io/kubernetes/pkg/kubelet/kuberuntime.startSpec", "container", 0, "kubelet.container.start"},
	{"kubelet", "k8s.io/api/core/v1.Container", "Name", 0, "kubelet.container.start"},
	{"kubelet", "k8s.io/api/core/v1.PodStatus", "ContainerStatuses", podStatusContainers, "kubelet.status.set"},
	{"kubelet", "k8s.io/api/core/v1.ContainerStatus", "", containerStatusSize, "kubelet.status.set"},
	{"kubelet", "k8s.io/api/core/v1.ContainerStatus", "State.Running", containerRunning, "kubelet.status.set"},
	{"kubelet", "k8s.io/api/core/v1.ContainerStateRunning", "StartedAt", 0, "kubelet.status.set"},
	{"kubelet", "time.Time", "wall", 0, "kubelet.status.set"},
	{"kubelet", "time.Time", "ext", 8, "kubelet.status.set"},
	{"kubelet", "k8s.io/kubernetes/pkg/kubelet/status.versionedPodStatus", "podName", 8, "kubelet.status.write"},
	{"kubelet", "k8s.io/kubernetes/pkg/kubelet/status.versionedPodStatus", "podNamespace", 24, "kubelet.status.write"},
	// kube-controller-manager: the controller's kind, and the objects its
	// syncs read (versioned, as its listers hold them).
	{"kube-controller-manager", "k8s.io/kubernetes/pkg/controller/replicaset.ReplicaSetController", "GroupVersionKind.Kind", rsControllerKind, "controller-manager.replicaset.sync"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.ReplicaSet", "ObjectMeta.Namespace", objNamespace, "controller-manager.*"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.ReplicaSet", "ObjectMeta.Name", objName, "controller-manager.*"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.ReplicaSet", "ObjectMeta.ResourceVersion", objRV, "controller-manager.*"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.ReplicaSet", "ObjectMeta.OwnerReferences", objOwnerRefs, "controller-manager.*"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.Deployment", "ObjectMeta.Namespace", objNamespace, "controller-manager.deployment.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.Deployment", "ObjectMeta.Name", objName, "controller-manager.deployment.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.Deployment", "ObjectMeta.ResourceVersion", objRV, "controller-manager.deployment.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.Deployment", "ObjectMeta.OwnerReferences", objOwnerRefs, "controller-manager.deployment.object"},
	{"kube-controller-manager", "k8s.io/api/batch/v1.Job", "ObjectMeta.Namespace", objNamespace, "controller-manager.job.object"},
	{"kube-controller-manager", "k8s.io/api/batch/v1.Job", "ObjectMeta.Name", objName, "controller-manager.job.object"},
	{"kube-controller-manager", "k8s.io/api/batch/v1.Job", "ObjectMeta.ResourceVersion", objRV, "controller-manager.job.object"},
	{"kube-controller-manager", "k8s.io/api/batch/v1.Job", "ObjectMeta.OwnerReferences", objOwnerRefs, "controller-manager.job.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.StatefulSet", "ObjectMeta.Namespace", objNamespace, "controller-manager.statefulset.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.StatefulSet", "ObjectMeta.Name", objName, "controller-manager.statefulset.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.StatefulSet", "ObjectMeta.ResourceVersion", objRV, "controller-manager.statefulset.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.StatefulSet", "ObjectMeta.OwnerReferences", objOwnerRefs, "controller-manager.statefulset.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.DaemonSet", "ObjectMeta.Namespace", objNamespace, "controller-manager.daemonset.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.DaemonSet", "ObjectMeta.Name", objName, "controller-manager.daemonset.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.DaemonSet", "ObjectMeta.ResourceVersion", objRV, "controller-manager.daemonset.object"},
	{"kube-controller-manager", "k8s.io/api/apps/v1.DaemonSet", "ObjectMeta.OwnerReferences", objOwnerRefs, "controller-manager.daemonset.object"},
	{"kube-controller-manager", "k8s.io/apimachinery/pkg/apis/meta/v1.OwnerReference", "Name", ownerRefName, "controller-manager.*"},
	{"kube-controller-manager", "k8s.io/apimachinery/pkg/apis/meta/v1.OwnerReference", "", ownerRefsSize, "controller-manager.*"},
}

// dwarfVersionedChecks hold where rows have variants: each applies to the
// binaries whose module is in its range. etcd's layouts come from the rows'
// own data (etcdRelease), one set per release.
var dwarfVersionedChecks = etcdReleaseChecks(etcdReleases...)

type dwarfVersionedCheck struct {
	dwarfCheck
	module, versions string
}

func etcdReleaseChecks(ms ...etcdRelease) []dwarfVersionedCheck {
	var out []dwarfVersionedCheck
	for _, m := range ms {
		pb := "go.etcd.io/etcd/api/v3/etcdserverpb."
		for _, c := range []dwarfCheck{
			{"etcd", pb + "TxnRequest", "Compare", int64(m.txnCompare), "etcd.request.*"},
			{"etcd", pb + "Compare", "Key", int64(m.compareKey), "etcd.request.*"},
			{"etcd", pb + "TxnResponse", "Header", int64(m.txnHeader), "etcd.request.*"},
			{"etcd", pb + "TxnResponse", "Succeeded", int64(m.txnSucceeded), "etcd.request.*"},
			{"etcd", pb + "ResponseHeader", "Revision", int64(m.headerRevision), "etcd.request.*"},
			{"etcd", pb + "PutRequest", "Key", int64(m.putKey), "etcd.request.put"},
			{"etcd", pb + "PutResponse", "Header", int64(m.putHeader), "etcd.request.put"},
			{"etcd", m.storage + "mvcc.storeTxnWrite", "beginRev", txnWriteBeginRev, "etcd.apply.*"},
		} {
			out = append(out, dwarfVersionedCheck{c, modEtcdServer, m.versions})
		}
	}
	return out
}

// normalLabBinaries finds the lab's normal builds (test/lab/build.sh), by
// name: every version in the cache (the lab's own, and any other built with
// a changed test/lab/versions.env).
func normalLabBinaries(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, name := range []string{"kube-apiserver", "etcd", "kube-scheduler", "kubelet", "kube-controller-manager"} {
		for _, path := range labBinaries(name) {
			if filepath.Base(filepath.Dir(filepath.Dir(path))) == "normal" {
				out[name] = append(out[name], path)
			}
		}
		if len(out[name]) == 0 {
			msg := fmt.Sprintf("no normal build of %s in the lab's cache (bin/normal under $KPATH_CACHE_DIR or ~/.cache/kpath): build the lab with make lab-up", name)
			if os.Getenv("KPATH_E2E") == "1" {
				t.Fatal(msg)
			}
			t.Skip("skipped: " + msg)
		}
	}
	return out
}

func TestOffsetsAgreeWithDWARF(t *testing.T) {
	bins := normalLabBinaries(t)
	checked := 0
	for name, paths := range bins {
		for _, path := range paths {
			checked += checkDWARF(t, name, path)
		}
	}
	t.Logf("%d offsets and the runtime.g table checked against the DWARF of %v", checked, bins)
}

// checkDWARF checks the offsets of the rows of one binary, and its runtime.g.
func checkDWARF(t *testing.T, name, path string) int {
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := f.DWARF()
	f.Close()
	if err != nil {
		t.Fatalf("%s (%s) has no DWARF: %v", name, path, err)
	}
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := layoutFor(bi.GoVersion); err != nil {
		t.Errorf("%s: %v", path, err)
	} else {
		for _, c := range []struct {
			field string
			want  uint16
		}{{"goid", l.goid}, {"parentGoid", l.parentGoid}} {
			got, err := fieldOffset(d, "runtime.g", c.field)
			if err != nil || got != int64(c.want) {
				t.Errorf("%s (%s): runtime.g.%s at %d (%v), the goroutine table says %d", path, bi.GoVersion, c.field, got, err, c.want)
			}
		}
	}
	checks := slices.Clone(dwarfChecks)
	for _, c := range dwarfVersionedChecks {
		r := Row{ID: c.row, Versions: c.versions}
		if v, err := binModuleVersion(bi, c.module); err == nil {
			if ok, _ := r.Applies(v); ok {
				checks = append(checks, c.dwarfCheck)
			}
		}
	}
	n := 0
	for _, c := range checks {
		if c.bin != name {
			continue
		}
		n++
		got, err := fieldOffset(d, c.typ, c.path)
		if err != nil {
			t.Errorf("%s: %s.%s (row %s): %v", path, c.typ, c.path, c.row, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: %s.%s is at %d in DWARF, row %s reads %d", path, c.typ, c.path, got, c.row, c.want)
		}
	}
	return n
}

// fieldOffset is the byte offset of a dot-separated field path in the named
// struct, or the struct's size for an empty path.
func fieldOffset(d *dwarf.Data, typ, path string) (int64, error) {
	st, err := structNamed(d, typ)
	if err != nil {
		return 0, err
	}
	if path == "" {
		return st.ByteSize, nil
	}
	var off int64
	parts := strings.Split(path, ".")
	for i, name := range parts {
		var f *dwarf.StructField
		for _, sf := range st.Field {
			if sf.Name == name {
				f = sf
			}
		}
		if f == nil {
			return 0, fmt.Errorf("%s has no field %s", st.StructName, name)
		}
		off += f.ByteOffset
		if i == len(parts)-1 {
			break
		}
		next := f.Type
		for {
			td, ok := next.(*dwarf.TypedefType)
			if !ok {
				break
			}
			next = td.Type
		}
		if st, _ = next.(*dwarf.StructType); st == nil {
			return 0, fmt.Errorf("field %s is a %s, not a struct", name, f.Type)
		}
	}
	return off, nil
}

var structCache = map[*dwarf.Data]map[string]*dwarf.StructType{}

func structNamed(d *dwarf.Data, name string) (*dwarf.StructType, error) {
	if d == nil {
		return nil, fmt.Errorf("no DWARF")
	}
	if structCache[d] == nil {
		m := map[string]*dwarf.StructType{}
		r := d.Reader()
		for {
			e, err := r.Next()
			if err != nil {
				return nil, err
			}
			if e == nil {
				break
			}
			if e.Tag != dwarf.TagStructType {
				continue
			}
			n, _ := e.Val(dwarf.AttrName).(string)
			if _, seen := m[n]; n == "" || seen {
				continue
			}
			t, err := d.Type(e.Offset)
			if err != nil {
				continue
			}
			if st, ok := t.(*dwarf.StructType); ok && !st.Incomplete {
				m[n] = st
			}
		}
		structCache[d] = m
	}
	st, ok := structCache[d][name]
	if !ok {
		return nil, fmt.Errorf("no struct %s in DWARF", name)
	}
	return st, nil
}
