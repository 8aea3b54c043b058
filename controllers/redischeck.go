package controllers

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/rediscap"
)

// checkRedis refuses a Redis the sale cannot run on as configured, before
// anything is warmed: older than the scripts need (RedisTooOld), or unable
// to give spec.redis.durability (DurabilityUnavailable: WAITAOF missing,
// appendonly no, fewer replicas online than asked). Before the sale opens
// that is a ConfigError: Warmed=False with the reason, and the sale waits
// for a human (Failed) rather than opening with a promise it cannot keep.
// Once buyers are admitted the sale is never failed for it: a replica gone
// mid-sale makes purchases answer "durable": false (the seckill counts
// them), and the sale shows Degraded with the same reason and message.
func (r *FlashSaleReconciler) checkRedis(ctx context.Context, s *scope) error {
	p, err := redisProblem(ctx, s.c.rdb, s.sale)
	if err != nil {
		return depErr(v1alpha1.ReasonRedisUnavailable, err)
	}
	if p == nil {
		return nil
	}
	if s.fs.Status.OpenedAt != nil {
		if len(s.degraded) == 0 {
			s.degraded = []string{p.Reason, p.Msg}
		}
		return nil
	}
	r.setCondition(s, v1alpha1.ConditionWarmed, metav1.ConditionFalse, p.Reason, p.Msg)
	return p
}

// redisProblem reads what the sale's Redis can do (INFO of every master)
// and says what it lacks for sale, as the ConfigError to report; nil when
// nothing is missing.
func redisProblem(ctx context.Context, rdb redis.UniversalClient, sale *v1alpha1.FlashSale) (*ConfigError, error) {
	servers, err := rediscap.Probe(ctx, rdb)
	if err != nil {
		return nil, fmt.Errorf("check the redis version: %w", err)
	}
	var needs rediscap.Needs
	if d := sale.Spec.Redis.Durability; d != nil {
		needs = rediscap.Needs{Replicas: int(d.Replicas), AOF: d.AOF}
	}
	p := rediscap.Check(servers, needs)
	switch {
	case p == nil:
		return nil, nil
	case p.Kind == rediscap.TooOld:
		return &ConfigError{Reason: v1alpha1.ReasonRedisTooOld, Msg: p.Msg}, nil
	default:
		return &ConfigError{Reason: v1alpha1.ReasonDurabilityUnavailable, Msg: p.Msg}, nil
	}
}
