package cli

import (
	"fmt"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/controllers"
)

// networkPolicyFlags switch the sales' NetworkPolicies on and say who may
// scrape the data-plane pods.
type networkPolicyFlags struct {
	enabled     bool
	metricsFrom string
}

func (n *networkPolicyFlags) register(f *pflag.FlagSet) {
	f.BoolVar(&n.enabled, "network-policies", false,
		"fence each sale's pods with NetworkPolicies: buyers on the seckill's http port, scrapes on every pod's metrics port, egress only to DNS and the sale's Redis, MySQL and Kafka (the chart turns it on)")
	f.StringVar(&n.metricsFrom, "network-policy-metrics-from", "",
		`with --network-policies: who may scrape the pods' metrics ports, a JSON (or YAML) list of NetworkPolicy peers, e.g. [{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}] (empty: any pod of any namespace)`)
}

// config is the reconciler's NetworkPolicyConfig of the flags.
func (n *networkPolicyFlags) config() (controllers.NetworkPolicyConfig, error) {
	cfg := controllers.NetworkPolicyConfig{Enabled: n.enabled}
	if n.metricsFrom == "" {
		return cfg, nil
	}
	if err := yaml.UnmarshalStrict([]byte(n.metricsFrom), &cfg.MetricsFrom); err != nil {
		return cfg, fmt.Errorf("--network-policy-metrics-from: not a list of NetworkPolicy peers: %w", err)
	}
	for i, p := range cfg.MetricsFrom {
		if p.PodSelector == nil && p.NamespaceSelector == nil && p.IPBlock == nil {
			return cfg, fmt.Errorf("--network-policy-metrics-from: peer %d selects nothing: give podSelector, namespaceSelector or ipBlock", i)
		}
	}
	return cfg, nil
}
