// Package k8s holds the Kubernetes deployment (hotline.yaml) and, in its
// test, the offline check of it: every core object decoded strictly into
// the k8s.io/api types, the CloudNativePG Cluster into a copy of the part
// of its schema the manifest uses, and the wiring between them checked.
package k8s
