// Package k8smeta keeps the metadata kpath puts on pod spans (UID, node,
// owner) from a client-go informer, so that probes need not read it.
package k8smeta

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// Pod is what kpath knows of one pod.
type Pod struct {
	UID       types.UID
	Namespace string
	Name      string
	Node      string
	OwnerKind string
	OwnerName string
}

// Pods answers pod metadata by UID and by namespace/name.
type Pods struct {
	informer cache.SharedIndexInformer

	mu     sync.RWMutex
	byUID  map[types.UID]Pod
	byName map[types.NamespacedName]types.UID
}

// Scope says which pods to watch: a DaemonSet agent watches its node's
// pods; an agent on a control-plane host that follows scheduling watches all.
type Scope struct {
	Node string // "" = all pods
}

// NewPods starts a pod informer and waits for its first list.
func NewPods(ctx context.Context, cs kubernetes.Interface, scope Scope) (*Pods, error) {
	var opts []informers.SharedInformerOption
	if scope.Node != "" {
		sel := fields.OneTermEqualSelector("spec.nodeName", scope.Node).String()
		opts = append(opts, informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = sel }))
	}
	f := informers.NewSharedInformerFactoryWithOptions(cs, 10*time.Minute, opts...)
	p := &Pods{
		informer: f.Core().V1().Pods().Informer(),
		byUID:    map[types.UID]Pod{},
		byName:   map[types.NamespacedName]types.UID{},
	}
	_, err := p.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { p.set(o) },
		UpdateFunc: func(_, o any) { p.set(o) },
		DeleteFunc: p.remove,
	})
	if err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	f.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), p.informer.HasSynced) {
		return nil, fmt.Errorf("pod informer: no list from the API server within 30s")
	}
	return p, nil
}

func podOf(o any) (Pod, bool) {
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return Pod{}, false
	}
	m := Pod{UID: pod.UID, Namespace: pod.Namespace, Name: pod.Name, Node: pod.Spec.NodeName}
	if ref := metav1.GetControllerOf(pod); ref != nil {
		m.OwnerKind, m.OwnerName = ref.Kind, ref.Name
	}
	return m, true
}

func (p *Pods) set(o any) {
	m, ok := podOf(o)
	if !ok {
		return
	}
	p.mu.Lock()
	p.byUID[m.UID] = m
	p.byName[types.NamespacedName{Namespace: m.Namespace, Name: m.Name}] = m.UID
	p.mu.Unlock()
}

func (p *Pods) remove(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	m, ok := podOf(o)
	if !ok {
		return
	}
	p.mu.Lock()
	// Keep the entry a while: the pod's last spans may still be on their
	// way. A pod of the same name gets a new UID, so nothing is confused.
	n := types.NamespacedName{Namespace: m.Namespace, Name: m.Name}
	if p.byName[n] == m.UID {
		delete(p.byName, n)
	}
	p.mu.Unlock()
	time.AfterFunc(2*time.Minute, func() {
		p.mu.Lock()
		delete(p.byUID, m.UID)
		p.mu.Unlock()
	})
}

// ByUID returns a pod by UID.
func (p *Pods) ByUID(uid types.UID) (Pod, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	m, ok := p.byUID[uid]
	return m, ok
}

// ByName returns the pod that now has this namespace and name.
func (p *Pods) ByName(namespace, name string) (Pod, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	uid, ok := p.byName[types.NamespacedName{Namespace: namespace, Name: name}]
	if !ok {
		return Pod{}, false
	}
	m, ok := p.byUID[uid]
	return m, ok
}

// NewPodsFromKubeconfig connects with a kubeconfig file, or with the pod's
// service account when kubeconfig is empty, and starts NewPods.
func NewPodsFromKubeconfig(ctx context.Context, kubeconfig string, scope Scope) (*Pods, error) {
	cs, err := NewClient(kubeconfig)
	if err != nil {
		return nil, err
	}
	return NewPods(ctx, cs, scope)
}

// NewClient is a client of the API server from kubeconfig, or from the pod's
// service account when kubeconfig is empty.
func NewClient(kubeconfig string) (*kubernetes.Clientset, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}
