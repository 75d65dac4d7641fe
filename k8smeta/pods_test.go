package k8smeta

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
)

func pod(name, uid, node string) *corev1.Pod {
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid),
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-123", Controller: &yes}}},
		Spec: corev1.PodSpec{NodeName: node},
	}
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if f() {
			return
		}
	}
	t.Fatalf("timed out: %s", what)
}

func TestPodsFollowsTheAPI(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := fake.NewSimpleClientset(pod("a", "uid-a", "node-1"))
	p, err := NewPods(ctx, cs, Scope{})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := p.ByUID("uid-a")
	if !ok || got.Name != "a" || got.Node != "node-1" || got.OwnerKind != "ReplicaSet" || got.OwnerName != "web-123" {
		t.Fatalf("ByUID(uid-a) = %+v, %v", got, ok)
	}
	pods := cs.CoreV1().Pods("ns")
	if _, err := pods.Create(ctx, pod("b", "uid-b", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod b seen", func() bool { _, ok := p.ByName("ns", "b"); return ok })
	if _, err := pods.Update(ctx, pod("b", "uid-b", "node-2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod b bound", func() bool { m, _ := p.ByUID("uid-b"); return m.Node == "node-2" })

	// Deleted and recreated under the same name: a new UID, the old one still answers.
	if err := pods.Delete(ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod b gone by name", func() bool { _, ok := p.ByName("ns", "b"); return !ok })
	if _, ok := p.ByUID("uid-b"); !ok {
		t.Error("a deleted pod's UID was forgotten at once")
	}
	if _, err := pods.Create(ctx, pod("b", "uid-b2", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pod b recreated", func() bool { m, ok := p.ByName("ns", "b"); return ok && m.UID == "uid-b2" })
}
