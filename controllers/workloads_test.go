package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

func planSale(mod func(*v1alpha1.FlashSale)) *v1alpha1.FlashSale {
	start := time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)
	fs := &v1alpha1.FlashSale{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "singles-day"},
		Spec: v1alpha1.FlashSaleSpec{
			StartTime: metav1.NewTime(start), EndTime: metav1.NewTime(start.Add(30 * time.Minute)),
			SKUs:    []v1alpha1.SKU{{ID: "1001", Stock: 5000, Price: "3999.00"}},
			Seckill: v1alpha1.Seckill{Replicas: 3, MaxReplicas: 10},
			Worker:  v1alpha1.Worker{Replicas: 2, LagThreshold: 1000},
			Kafka:   &v1alpha1.Kafka{Partitions: 12},
		},
	}
	if mod != nil {
		mod(fs)
	}
	fs.SetDefaults()
	return fs
}

func TestWorkerTarget(t *testing.T) {
	kafka := planSale(nil)
	redisOnly := planSale(func(fs *v1alpha1.FlashSale) { fs.Spec.Kafka = nil })
	for _, tc := range []struct {
		name    string
		sale    *v1alpha1.FlashSale
		lag     int64
		current int32
		want    int32
	}{
		{"no lag: the floor", kafka, 0, 0, 2},
		{"drained after a scale-up: back to the floor", kafka, 0, 9, 2},
		{"small lag stays at the floor", kafka, 1500, 2, 2},
		{"one pod per lagThreshold", kafka, 5001, 2, 6},
		{"capped at the partition count", kafka, 1_000_000, 2, 12},
		{"a shrinking backlog keeps the pods until drained", kafka, 1200, 6, 6},
		{"redis-only capped at the default ceiling", redisOnly, 1_000_000, 2, v1alpha1.DefaultPartitions},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := workerTarget(tc.sale, tc.lag, tc.current); got != tc.want {
				t.Fatalf("workerTarget(lag %d, current %d) = %d, want %d", tc.lag, tc.current, got, tc.want)
			}
		})
	}
}

func TestBuildPlan(t *testing.T) {
	in := PlanInput{Image: "flashsale:1", DefaultSecret: DefaultEndpointsSecret, Targets: Targets{Seckill: 3, Worker: 2, Autoscale: true}}

	t.Run("autoscaled while running", func(t *testing.T) {
		p, err := BuildPlan(planSale(nil), in)
		if err != nil {
			t.Fatal(err)
		}
		if p.HPA == nil || *p.HPA.Spec.MinReplicas != 3 || p.HPA.Spec.MaxReplicas != 10 {
			t.Fatalf("autoscaler %+v", p.HPA)
		}
		if p.Seckill.Name != "singles-day-seckill" || *p.Seckill.Spec.Replicas != 3 || *p.Worker.Spec.Replicas != 2 || *p.Rollback.Spec.Replicas != 1 {
			t.Fatal("names or replicas wrong")
		}
		if !strings.Contains(p.ConfigMap.Data["sale.yaml"], "kind: FlashSale") {
			t.Fatalf("sale.yaml: %s", p.ConfigMap.Data["sale.yaml"])
		}
	})
	t.Run("no autoscaler while draining or without maxReplicas", func(t *testing.T) {
		off := in
		off.Targets.Autoscale = false
		p, _ := BuildPlan(planSale(nil), off)
		q, _ := BuildPlan(planSale(func(fs *v1alpha1.FlashSale) { fs.Spec.Seckill.MaxReplicas = 0 }), in)
		if p.HPA != nil || q.HPA != nil {
			t.Fatal("autoscaler planned")
		}
	})
	t.Run("what pods read at start rolls them; stock, pause and sizes do not", func(t *testing.T) {
		hash := func(mod func(*v1alpha1.FlashSale)) string {
			p, err := BuildPlan(planSale(mod), in)
			if err != nil {
				t.Fatal(err)
			}
			return p.Seckill.Spec.Template.Annotations[configHashAnnot]
		}
		base := hash(nil)
		if base == "" || base != hash(nil) {
			t.Fatal("config hash missing or not deterministic")
		}
		for name, mod := range map[string]func(*v1alpha1.FlashSale){
			"stock raise": func(fs *v1alpha1.FlashSale) { fs.Spec.SKUs[0].Stock = 6000 },
			"pause":       func(fs *v1alpha1.FlashSale) { fs.Spec.Paused = true },
			"replicas":    func(fs *v1alpha1.FlashSale) { fs.Spec.Seckill.Replicas = 5; fs.Spec.Worker.Replicas = 4 },
		} {
			if hash(mod) != base {
				t.Errorf("a %s would roll every pod mid-sale", name)
			}
		}
		for name, mod := range map[string]func(*v1alpha1.FlashSale){
			"new SKU": func(fs *v1alpha1.FlashSale) {
				fs.Spec.SKUs = append(fs.Spec.SKUs, v1alpha1.SKU{ID: "1002", Stock: 1, Price: "1.00"})
			},
			"rate limit": func(fs *v1alpha1.FlashSale) { fs.Spec.RateLimit.PerUserPerSecond = 3 },
			"later end":  func(fs *v1alpha1.FlashSale) { fs.Spec.EndTime.Time = fs.Spec.EndTime.Add(time.Minute) },
			"user limit": func(fs *v1alpha1.FlashSale) { fs.Spec.SKUs[0].PerUserLimit = 2 },
		} {
			if hash(mod) == base {
				t.Errorf("a %s does not reach the pods", name)
			}
		}
	})
	t.Run("secrets wired by reference, never by value", func(t *testing.T) {
		p, _ := BuildPlan(planSale(func(fs *v1alpha1.FlashSale) {
			fs.Spec.Redis.Mode = v1alpha1.RedisCluster
			fs.Spec.Payment = &v1alpha1.Payment{SecretRef: secretRef("pay", "secret")}
			fs.Spec.Token = &v1alpha1.Token{KeySecretRef: secretRef("tok", "k")}
		}), in)
		env := map[string]string{}
		for _, e := range p.Seckill.Spec.Template.Spec.Containers[0].Env {
			switch {
			case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
				env[e.Name] = e.ValueFrom.SecretKeyRef.Name
			default:
				env[e.Name] = e.Value
			}
		}
		if env["FLASHSALE_REDIS_CLUSTER"] != DefaultEndpointsSecret || env["FLASHSALE_KAFKA_BROKERS"] != DefaultEndpointsSecret {
			t.Fatalf("env %v", env)
		}
		if env["FLASHSALE_PAYMENT_SECRET_FILE"] == "" || env["FLASHSALE_TOKEN_KEY_FILE"] == "" {
			t.Fatalf("payment or token file not wired: %v", env)
		}
		found := false
		for _, v := range p.Seckill.Spec.Template.Spec.Volumes {
			found = found || (v.Secret != nil && v.Secret.SecretName == "tok" && v.Secret.Items[0].Key == "k")
		}
		if !found {
			t.Fatal("the sale's token Secret is not mounted")
		}
	})
}

func secretRef(name, key string) *corev1.SecretKeySelector {
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}
}
