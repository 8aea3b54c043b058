package controllers

import (
	networkingv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// NetworkPolicyConfig says whether and how the operator fences a sale's pods
// with NetworkPolicies.
type NetworkPolicyConfig struct {
	// Enabled makes the operator apply the sale's NetworkPolicies.
	Enabled bool
}

// networkPolicies are the NetworkPolicies of a sale's pods, none when off.
func networkPolicies(fs *v1alpha1.FlashSale, in PlanInput) []*networkingv1.NetworkPolicy {
	return nil
}

// ownedNetworkPolicies names the NetworkPolicies a sale may own, for teardown.
func ownedNetworkPolicies(fs *v1alpha1.FlashSale) []client.Object {
	return nil
}
