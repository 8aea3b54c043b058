package controllers

import (
	"context"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/plan"
)

// PlannedObjects lists the objects the operator creates for sale (defaulted)
// before its start, from the very builder the reconciler applies
// (BuildPlan), so `flashsale plan` and the Planned condition cannot drift
// from what is created: the Deployments at their pre-scaled replicas with
// their image, the autoscaler, the Service, the PodDisruptionBudget, the
// ConfigMap, the NetworkPolicies when in.NetworkPolicy is on, and the token
// Secret when the sale names none. in.Targets is ignored: the targets are
// the sale's own floors.
func PlannedObjects(sale *v1alpha1.FlashSale, in PlanInput) ([]plan.Object, error) {
	in.Targets = Targets{Seckill: sale.Spec.Seckill.Replicas, Worker: sale.Spec.Worker.Replicas,
		Autoscale: sale.Spec.Seckill.MaxReplicas > 0}
	if sale.Spec.Image != "" {
		in.Image = sale.Spec.Image
	}
	p, err := BuildPlan(sale, in)
	if err != nil {
		return nil, err
	}
	var out []plan.Object
	for _, d := range []struct {
		name     string
		replicas *int32
		image    string
	}{
		{p.Seckill.Name, p.Seckill.Spec.Replicas, appImage(&p.Seckill.Spec.Template.Spec, ComponentSeckill)},
		{p.Worker.Name, p.Worker.Spec.Replicas, appImage(&p.Worker.Spec.Template.Spec, ComponentWorker)},
		{p.Rollback.Name, p.Rollback.Spec.Replicas, appImage(&p.Rollback.Spec.Template.Spec, ComponentRollback)},
	} {
		out = append(out, plan.Object{Kind: "Deployment", Name: d.name, Replicas: d.replicas, Image: d.image})
	}
	if p.HPA != nil {
		out = append(out, plan.Object{Kind: "HorizontalPodAutoscaler", Name: p.HPA.Name,
			Replicas: p.HPA.Spec.MinReplicas, MaxReplicas: &p.HPA.Spec.MaxReplicas})
	}
	out = append(out,
		plan.Object{Kind: "Service", Name: p.Service.Name},
		plan.Object{Kind: "PodDisruptionBudget", Name: p.PDB.Name},
		plan.Object{Kind: "ConfigMap", Name: p.ConfigMap.Name})
	for _, np := range p.NetworkPolicies {
		out = append(out, plan.Object{Kind: "NetworkPolicy", Name: np.Name})
	}
	if tokenRef(sale) == nil {
		out = append(out, plan.Object{Kind: "Secret", Name: TokenSecretName(sale)})
	}
	return out, nil
}

// appImage is the image of a component's own container.
func appImage(pod *corev1.PodSpec, component string) string {
	if c := appOf(pod, component); c != nil {
		return c.Image
	}
	return ""
}

// planned remembers, per sale, what its Planned condition was computed
// from, so a reconcile recomputes the plan only when the spec or the Redis
// topology changed, and what it warned of, so a Warning Event is sent only
// when the warnings change (not every figure of the message).
type planned struct{ m sync.Map }

type plannedFrom struct {
	generation int64
	primaries  int
	// warnings are the plan's warnings, joined.
	warnings string
}

// reconcilePlan sets the Planned condition from the sale's plan on the
// Redis it runs on: True (PlanFits) or False (PlanDoesNotFit) with the
// warnings first, then the figures. It runs from the first reconcile, long
// before warm-up, so the SRE reads the verdict while there is time to act.
// A plan that cannot be made (the Redis topology unreadable) leaves the
// condition as it was: it is advice, and stops nothing.
func (r *FlashSaleReconciler) reconcilePlan(ctx context.Context, s *scope) {
	n, err := Primaries(ctx, s.c.rdb)
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("Cannot read the Redis topology for the sale's plan", "error", err.Error())
		return
	}
	prev := apimeta.FindStatusCondition(s.fs.Status.Conditions, v1alpha1.ConditionPlanned)
	last, known := r.plans.m.Load(s.fs.UID)
	if known && last.(plannedFrom).generation == s.fs.Generation && last.(plannedFrom).primaries == n &&
		prev != nil && prev.ObservedGeneration == s.fs.Generation {
		return
	}
	objs, err := PlannedObjects(s.sale, PlanInput{Image: r.plannedImage(s.fs), PullPolicy: r.PullPolicy,
		OperatorVersion: r.OperatorVersion, DefaultSecret: r.DefaultSecret,
		NetworkPolicy: NetworkPolicyConfig{Enabled: r.NetworkPolicy.Enabled}})
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Cannot list the objects of the sale's plan")
		return
	}
	p := plan.Compute(s.sale, plan.Topology{Primaries: n, Source: "operator"}, plan.DefaultFigures(), objs)
	status, reason := metav1.ConditionTrue, v1alpha1.ReasonPlanFits
	if !p.Fits() {
		status, reason = metav1.ConditionFalse, v1alpha1.ReasonPlanDoesNotFit
	}
	warnings := strings.Join(p.Warnings, "; ")
	// setCondition updates prev in place: what it said is read first. After
	// a restart nothing is remembered: the old message starts with its
	// warnings.
	newWarnings := prev != nil && prev.Reason == reason &&
		(known && last.(plannedFrom).warnings != warnings || !known && !strings.HasPrefix(prev.Message, warnings+"; "))
	msg := p.Compact()
	r.setCondition(s, v1alpha1.ConditionPlanned, status, reason, msg)
	if newWarnings && !p.Fits() {
		// setCondition tells a change of verdict; new warnings under the
		// same verdict are news too.
		r.event(s.fs, corev1.EventTypeWarning, reason, v1alpha1.ConditionPlanned, "%s", msg)
	}
	r.plans.m.Store(s.fs.UID, plannedFrom{generation: s.fs.Generation, primaries: n, warnings: warnings})
}

// plannedImage is the image the sale's pods run: status.dataPlane once
// pinned, else the operator's own (spec.image is PlannedObjects' business).
func (r *FlashSaleReconciler) plannedImage(fs *v1alpha1.FlashSale) string {
	if fs.Status.DataPlane != nil && fs.Status.DataPlane.Image != "" {
		return fs.Status.DataPlane.Image
	}
	return r.Image
}
