package probes

// podRows follow a pod from kube-apiserver's watch cache through the
// informers of kube-scheduler and the kubelet to its containers.
var podRows = []Row{}
