package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// followPods lists a namespace's pods, then watches them until the
// returned stop is called, rewatching from the last resourceVersion when
// the server ends a watch and listing again when a watch cannot start
// (the events in the gap are in the list). listed takes each list, event
// each watch event of a pod.
func followPods(ctx context.Context, cs kubernetes.Interface, ns string, listed func([]corev1.Pod), event func(watch.EventType, *corev1.Pod)) (stop func(), err error) {
	api := cs.CoreV1().Pods(ns)
	list, err := api.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	listed(list.Items)
	rv := list.ResourceVersion
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for wctx.Err() == nil {
			w, err := api.Watch(wctx, metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true})
			if err != nil {
				if sleepCtx(wctx, time.Second) != nil {
					return
				}
				if l, err := api.List(wctx, metav1.ListOptions{}); err == nil {
					rv = l.ResourceVersion
					listed(l.Items)
				}
				continue
			}
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue
				}
				rv = p.ResourceVersion
				event(ev.Type, p)
			}
			w.Stop()
		}
	}()
	return func() { cancel(); <-done }, nil
}
