package controllers

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// TestSeckillDurabilityArgs: spec.redis.durability reaches the seckill
// container as its --wait-* flags (the default timeout filled in); without
// it the command line is unchanged.
func TestSeckillDurabilityArgs(t *testing.T) {
	in := PlanInput{Image: "flashsale:1", DefaultSecret: DefaultEndpointsSecret, Targets: Targets{Seckill: 3, Worker: 2}}
	args := func(d *v1alpha1.Durability) []string {
		p, err := BuildPlan(planSale(func(fs *v1alpha1.FlashSale) { fs.Spec.Redis.Durability = d }), in)
		if err != nil {
			t.Fatal(err)
		}
		return p.Seckill.Spec.Template.Spec.Containers[0].Args
	}
	for _, a := range args(nil) {
		if len(a) > 7 && a[:7] == "--wait-" {
			t.Errorf("durability flag %q without spec.redis.durability", a)
		}
	}
	got := args(&v1alpha1.Durability{Replicas: 1})
	for _, want := range []string{"--wait-replicas=1", "--wait-aof=false", "--wait-timeout=250ms"} {
		if !slices.Contains(got, want) {
			t.Errorf("seckill args %v lack %s", got, want)
		}
	}
	got = args(&v1alpha1.Durability{Replicas: 2, AOF: true, Timeout: &metav1.Duration{Duration: time.Second}})
	for _, want := range []string{"--wait-replicas=2", "--wait-aof=true", "--wait-timeout=1s"} {
		if !slices.Contains(got, want) {
			t.Errorf("seckill args %v lack %s", got, want)
		}
	}
}

// TestWorkerDurabilityArgs: spec.redis.durability.replicas reaches the
// worker as --wait-replicas (it holds orders back until the replicas have
// them); aof alone, or no durability, leaves its command line unchanged.
func TestWorkerDurabilityArgs(t *testing.T) {
	in := PlanInput{Image: "flashsale:1", DefaultSecret: DefaultEndpointsSecret, Targets: Targets{Seckill: 3, Worker: 2}}
	args := func(d *v1alpha1.Durability) []string {
		p, err := BuildPlan(planSale(func(fs *v1alpha1.FlashSale) { fs.Spec.Redis.Durability = d }), in)
		if err != nil {
			t.Fatal(err)
		}
		return p.Worker.Spec.Template.Spec.Containers[0].Args
	}
	for _, d := range []*v1alpha1.Durability{nil, {AOF: true}} {
		for _, a := range args(d) {
			if strings.HasPrefix(a, "--wait-") {
				t.Errorf("durability %+v: worker flag %q", d, a)
			}
		}
	}
	for _, n := range []int32{1, 2} {
		want := "--wait-replicas=" + strconv.Itoa(int(n))
		if got := args(&v1alpha1.Durability{Replicas: n, AOF: true}); !slices.Contains(got, want) {
			t.Errorf("worker args %v lack %s", got, want)
		}
	}
}
