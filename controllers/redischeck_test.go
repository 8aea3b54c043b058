package controllers_test

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/keys"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// TestWarmupRefusesRedisWithoutDurability: a sale asking for a replica's
// acknowledgement (spec.redis.durability.replicas) on a Redis with none, or
// for WAITAOF on a server that cannot give it, is not warmed: Warmed=False
// with reason DurabilityUnavailable and a message saying what to configure,
// and the sale waits for a human (Failed). Once a replica is online it warms.
func TestWarmupRefusesRedisWithoutDurability(t *testing.T) {
	t.Run("replicas", func(t *testing.T) {
		primary := testutil.StartRedisServer(t)
		e := newEnv(t, envOpts{redisAddr: primary.Addr})
		e.sale(func(fs *v1alpha1.FlashSale) {
			fs.Spec.Redis.Durability = &v1alpha1.Durability{Replicas: 1}
		})
		e.clk.SetTime(e.t0.Add(5 * time.Minute))
		e.reconcile()
		e.wantCond(v1alpha1.ConditionWarmed, metav1.ConditionFalse, v1alpha1.ReasonDurabilityUnavailable)
		e.wantPhase(v1alpha1.PhaseFailed)
		if msg := e.cond(v1alpha1.ConditionWarmed).Message; !strings.Contains(msg, "0 replica(s) online") || !strings.Contains(msg, "add replicas") {
			t.Errorf("Warmed message %q does not say what is missing and what to do", msg)
		}
		if n := primary.Client(t).Exists(e.ctx, keys.ForSKU(e.ns+"/"+saleName, "1001").Stock).Val(); n != 0 {
			t.Error("the sale was warmed on a Redis that cannot give its durability")
		}

		testutil.StartReplica(t, primary)
		e.reconcile()
		e.wantCond(v1alpha1.ConditionWarmed, metav1.ConditionTrue, v1alpha1.ReasonWarmed)
		e.wantPhase(v1alpha1.PhaseWarming)
	})
	t.Run("aof", func(t *testing.T) {
		srv := testutil.StartRedisServer(t) // appendonly no, and 7.0 here
		e := newEnv(t, envOpts{redisAddr: srv.Addr})
		e.sale(func(fs *v1alpha1.FlashSale) {
			fs.Spec.Redis.Durability = &v1alpha1.Durability{AOF: true}
		})
		e.clk.SetTime(e.t0.Add(5 * time.Minute))
		e.reconcile()
		e.wantCond(v1alpha1.ConditionWarmed, metav1.ConditionFalse, v1alpha1.ReasonDurabilityUnavailable)
		msg := e.cond(v1alpha1.ConditionWarmed).Message
		if !strings.Contains(msg, "WAITAOF") && !strings.Contains(msg, "appendonly yes") {
			t.Errorf("Warmed message %q does not say what to configure", msg)
		}
	})
}
