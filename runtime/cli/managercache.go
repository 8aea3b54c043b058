package cli

import (
	"fmt"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// The label every object the operator creates carries (controllers.Labels
// stamps it): the manager caches only objects that have it.
const (
	managedByLabel = "app.kubernetes.io/managed-by"
	managedByValue = "flashsale-operator"
)

// CacheOptions scope the manager's cache to the operator's own objects:
// FlashSales (in watchNamespaces, or all when empty) and, of the kinds a
// sale owns, only those labelled as the operator's. Without it the
// Deployment informer (the one owned kind the controller watches) would hold
// every Deployment of the cluster. The other owned kinds have no informer
// today (the controller reads them through the API reader); their entries
// keep an informer someone adds later to the operator's own objects.
//
// A Get through the cached client of a kind no informer serves fails
// (ReaderFailOnMissingInformer) instead of silently starting a cluster-wide
// informer: such reads must go through the manager's API reader.
func CacheOptions(watchNamespaces []string) cache.Options {
	own := cache.ByObject{Label: labels.SelectorFromSet(labels.Set{managedByLabel: managedByValue})}
	o := cache.Options{
		ReaderFailOnMissingInformer: true,
		ByObject: map[client.Object]cache.ByObject{
			&appsv1.Deployment{}:                     own,
			&corev1.Service{}:                        own,
			&policyv1.PodDisruptionBudget{}:          own,
			&autoscalingv2.HorizontalPodAutoscaler{}: own,
			&networkingv1.NetworkPolicy{}:            own,
		},
	}
	if len(watchNamespaces) > 0 {
		o.DefaultNamespaces = make(map[string]cache.Config, len(watchNamespaces))
		for _, ns := range watchNamespaces {
			o.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return o
}

// ClientOptions make the manager's client read Secrets, ConfigMaps and Pods
// straight from the API server: the operator reads a few of them by name,
// now and then, and a cache of them would watch (and hold the data of)
// every one in the cluster.
func ClientOptions() client.Options {
	return client.Options{Cache: &client.CacheOptions{
		DisableFor: []client.Object{&corev1.Secret{}, &corev1.ConfigMap{}, &corev1.Pod{}},
	}}
}

// parseNamespaces reads --watch-namespaces: names separated by commas,
// blanks ignored; empty means every namespace.
func parseNamespaces(flag string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, ns := range strings.Split(flag, ",") {
		ns = strings.TrimSpace(ns)
		if ns == "" || seen[ns] {
			continue
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("--watch-namespaces: %q is not a namespace name: %s", ns, strings.Join(errs, "; "))
		}
		seen[ns] = true
		out = append(out, ns)
	}
	return out, nil
}
