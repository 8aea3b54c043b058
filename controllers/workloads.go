package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// Components of a sale: each is one Deployment running our one image with a
// different subcommand.
const (
	ComponentSeckill  = "seckill"
	ComponentWorker   = "worker"
	ComponentRollback = "rollback"
)

// Ports the data-plane commands listen on (their defaults in runtime/cli).
// The seckill pods serve buyers on "http" and their metrics and probes on
// "metrics", so an Ingress in front of the API cannot expose them; the
// worker and rollback pods serve nothing but "metrics".
const (
	seckillPort        = 8080
	seckillMetricsPort = 9090
	workerPort         = 9090
	rollbackPort       = 9091

	portHTTP    = "http"
	portMetrics = "metrics"
)

// Paths inside the data-plane pods. They name where Secrets are mounted,
// not secrets.
//
//nolint:gosec // G101: file paths and Secret key names, no credential
const (
	configDir       = "/etc/flashsale/config"
	saleFile        = configDir + "/sale.yaml"
	tokenDir        = "/etc/flashsale/token"
	paymentDir      = "/etc/flashsale/payment"
	saleFileKey     = "sale.yaml"
	tokenKeysKey    = "keys"
	paymentKey      = "secret"
	configHashAnnot = "flashsale.dev/config-hash"
)

// OperatorVersionAnnotation is the version of the operator that rendered a
// Deployment's pod template, recorded on the Deployment (on the template it
// would roll the pods): see holdTemplates.
const OperatorVersionAnnotation = "flashsale.dev/operator-version"

// Keys of the default endpoints Secret, used where the spec names no Secret.
const (
	DefaultEndpointsSecret = "flashsale-endpoints"
	KeyRedisAddress        = "redis-address"
	KeyMySQLDSN            = "mysql-dsn"
	KeyKafkaBrokers        = "kafka-brokers"
)

// nonRootUID is distroless' "nonroot" user, the UID our image runs as.
const nonRootUID = 65532

// Name of an object the operator creates for a sale.
func Name(fs *v1alpha1.FlashSale, component string) string { return fs.Name + "-" + component }

// ConfigMapName holds the sale manifest the pods read.
func ConfigMapName(fs *v1alpha1.FlashSale) string { return fs.Name + "-config" }

// TokenSecretName is the Secret of token keys the operator generates when the
// spec names none: every seckill pod must sign with the same key, or a token
// fetched from one pod would be refused by the next.
func TokenSecretName(fs *v1alpha1.FlashSale) string { return fs.Name + "-token" }

// Labels every object of a sale carries; SelectorLabels pick one component's pods.
func Labels(fs *v1alpha1.FlashSale, component string) map[string]string {
	l := SelectorLabels(fs, component)
	l["app.kubernetes.io/managed-by"] = "flashsale-operator"
	l["app.kubernetes.io/part-of"] = "flashsale"
	return l
}

// SelectorLabels select the pods of one component of one sale.
func SelectorLabels(fs *v1alpha1.FlashSale, component string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":      "flashsale",
		"app.kubernetes.io/instance":  fs.Name,
		"app.kubernetes.io/component": component,
		SaleLabel:                     fs.Name,
	}
}

// SaleLabel names the sale an object belongs to.
const SaleLabel = "flashsale.dev/sale"

// SaleManifest is the sale as the data-plane commands read it: the same YAML a
// user applies, with the defaults filled in and without status or server
// metadata, so a pod never depends on the API server at run time.
func SaleManifest(fs *v1alpha1.FlashSale) ([]byte, error) {
	out := v1alpha1.FlashSale{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "FlashSale"},
		ObjectMeta: metav1.ObjectMeta{Name: fs.Name, Namespace: fs.Namespace},
		Spec:       *fs.Spec.DeepCopy(),
	}
	out.SetDefaults()
	// Where the pods run and what they may use is the Deployments' business:
	// no data-plane command reads it, and a pod of an older operator's
	// version (kept through an upgrade, see holdTemplates) loads sale.yaml
	// refusing unknown fields, so a field newer than its binary (the
	// placement fields) would stop it at its next start.
	for _, w := range []*v1alpha1.Placement{&out.Spec.Seckill.Placement, &out.Spec.Worker.Placement, &out.Spec.Rollback.Placement} {
		*w = v1alpha1.Placement{}
	}
	out.Spec.Seckill.Resources, out.Spec.Worker.Resources, out.Spec.Rollback.Resources = nil, nil, nil
	// Neither do the plan's inputs, the webhooks or the early close (the
	// pods learn of a close from the switch in Redis, as of the end).
	out.Spec.Expected, out.Spec.Notifications, out.Spec.Closed = nil, nil, false
	b, err := yaml.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("render sale manifest: %w", err)
	}
	return b, nil
}

// Plan is every object the operator applies for a sale at one moment.
type Plan struct {
	ConfigMap *corev1.ConfigMap
	Seckill   *appsv1.Deployment
	Service   *corev1.Service
	PDB       *policyv1.PodDisruptionBudget
	// HPA is nil when autoscaling is off or the sale is draining.
	HPA      *autoscalingv2.HorizontalPodAutoscaler
	Worker   *appsv1.Deployment
	Rollback *appsv1.Deployment
	// NetworkPolicies fence the sale's pods (none when PlanInput.NetworkPolicy is off).
	NetworkPolicies []*networkingv1.NetworkPolicy
}

// Targets are the replica counts decided for this reconcile.
type Targets struct {
	Seckill int32
	Worker  int32
	// Autoscale keeps the HorizontalPodAutoscaler between seckill.replicas and
	// seckill.maxReplicas.
	Autoscale bool
}

// PlanInput is what the planner needs beyond the FlashSale.
type PlanInput struct {
	// Image of the pods unless the sale names its own: the sale's pinned
	// image (status.dataPlane) once it warmed.
	Image      string
	PullPolicy corev1.PullPolicy
	// OperatorVersion is recorded on the Deployments it renders.
	OperatorVersion string
	// DefaultSecret is the endpoints Secret used for references the spec leaves out.
	DefaultSecret string
	Targets       Targets
	NetworkPolicy NetworkPolicyConfig
}

// BuildPlan computes the full desired state of a sale's workloads. It is pure:
// the same input gives the same objects, which server-side apply then makes
// true without diffing by hand.
func BuildPlan(fs *v1alpha1.FlashSale, in PlanInput) (*Plan, error) {
	manifest, err := SaleManifest(fs)
	if err != nil {
		return nil, err
	}
	hash, err := podConfigHash(fs)
	if err != nil {
		return nil, err
	}
	env := commonEnv(fs, in.DefaultSecret)
	p := &Plan{
		ConfigMap: &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: meta(fs, ConfigMapName(fs), "config"),
			Data:       map[string]string{saleFileKey: string(manifest)},
		},
		Seckill:  seckillDeployment(fs, in, hash, env),
		Service:  seckillService(fs),
		PDB:      seckillPDB(fs),
		HPA:      seckillAutoscaler(fs, in.Targets),
		Worker:   workerDeployment(fs, in, hash, env),
		Rollback: rollbackDeployment(fs, in, hash, env),

		NetworkPolicies: networkPolicies(fs, in),
	}
	for _, d := range []*appsv1.Deployment{p.Seckill, p.Worker, p.Rollback} {
		d.Annotations = map[string]string{OperatorVersionAnnotation: in.OperatorVersion}
	}
	return p, nil
}

// seckillDeployment runs the buyers' API. It alone reads the token keys and
// the payment callback secret.
func seckillDeployment(fs *v1alpha1.FlashSale, in PlanInput, hash string, env []corev1.EnvVar) *appsv1.Deployment {
	args := []string{"seckill", "--file=" + saleFile, "--listen=:" + strconv.Itoa(seckillPort),
		"--metrics-addr=:" + strconv.Itoa(seckillMetricsPort), "--log-format=json"}
	args = append(args, durabilityArgs(fs.Spec.Redis.Durability)...)
	seckillEnv := append(append([]corev1.EnvVar{}, env...),
		corev1.EnvVar{Name: "FLASHSALE_TOKEN_KEY_FILE", Value: tokenDir + "/" + tokenKeysKey})
	if fs.Spec.Payment != nil && fs.Spec.Payment.SecretRef != nil {
		seckillEnv = append(seckillEnv, corev1.EnvVar{Name: "FLASHSALE_PAYMENT_SECRET_FILE", Value: paymentDir + "/" + paymentKey})
	}
	d := deployment(fs, in, ComponentSeckill, hash, in.Targets.Seckill, container{
		args: args, env: seckillEnv,
		ports: []corev1.ContainerPort{
			{Name: portHTTP, ContainerPort: seckillPort, Protocol: corev1.ProtocolTCP},
			{Name: portMetrics, ContainerPort: seckillMetricsPort, Protocol: corev1.ProtocolTCP},
		},
		metricsPort: seckillMetricsPort,
		readyPath:   "/readyz", resources: fs.Spec.Seckill.Resources,
		defaultCPU: "250m", defaultMem: "128Mi",
		volumes:   seckillVolumes(fs),
		placement: fs.Spec.Seckill.Placement, affinity: seckillAffinity(fs),
	})
	// Buyers arrive in one burst: a surge pod adds capacity during a rollout
	// and no ready pod is taken away first.
	d.Spec.Strategy = appsv1.DeploymentStrategy{
		Type: appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{
			MaxUnavailable: ptr.To(intstr.FromInt32(0)),
			MaxSurge:       ptr.To(intstr.FromString("25%")),
		},
	}
	return d
}

// durabilityArgs are the seckill flags of spec.redis.durability, spelt out
// on the command line (the manifest carries them too) so that
// `kubectl describe pod` shows what a 202 waits for.
func durabilityArgs(d *v1alpha1.Durability) []string {
	if d == nil || d.Replicas == 0 && !d.AOF {
		return nil
	}
	timeout := v1alpha1.DefaultDurabilityTimeout
	if d.Timeout != nil && d.Timeout.Duration > 0 {
		timeout = d.Timeout.Duration
	}
	return []string{
		"--wait-replicas=" + strconv.Itoa(int(d.Replicas)),
		"--wait-aof=" + strconv.FormatBool(d.AOF),
		"--wait-timeout=" + timeout.String(),
	}
}

// workerDurabilityArgs is the worker's share of spec.redis.durability: it
// moves an order out of its stream only once durability.replicas replicas
// have it, or a failover would sell again the unit of an order it stored.
// durability.aof asks nothing of the worker: an order on the primary's
// fsynced AOF survives a restart of that primary, stream entry included,
// and is moved after it; a failover to a replica is what replicas cover.
func workerDurabilityArgs(d *v1alpha1.Durability) []string {
	if d == nil || d.Replicas == 0 {
		return nil
	}
	return []string{"--wait-replicas=" + strconv.Itoa(int(d.Replicas))}
}

// workerDeployment runs the order pipeline, scaled by the queue backlog.
func workerDeployment(fs *v1alpha1.FlashSale, in PlanInput, hash string, env []corev1.EnvVar) *appsv1.Deployment {
	args := []string{"worker", "--file=" + saleFile, "--metrics-addr=:" + strconv.Itoa(workerPort), "--log-format=json"}
	args = append(args, workerDurabilityArgs(fs.Spec.Redis.Durability)...)
	return deployment(fs, in, ComponentWorker, hash, in.Targets.Worker, container{
		args: args,
		env:  env, ports: metricsOnly(workerPort), metricsPort: workerPort,
		readyPath: "/readyz", resources: fs.Spec.Worker.Resources,
		defaultCPU: "250m", defaultMem: "256Mi",
		placement: fs.Spec.Worker.Placement,
	})
}

// rollbackDeployment runs the one pod that cancels unpaid orders and
// returns their stock.
func rollbackDeployment(fs *v1alpha1.FlashSale, in PlanInput, hash string, env []corev1.EnvVar) *appsv1.Deployment {
	return deployment(fs, in, ComponentRollback, hash, 1, container{
		args: []string{"rollback", "--file=" + saleFile, "--metrics-addr=:" + strconv.Itoa(rollbackPort), "--log-format=json"},
		env:  env, ports: metricsOnly(rollbackPort), metricsPort: rollbackPort,
		readyPath: "/healthz", resources: fs.Spec.Rollback.Resources,
		defaultCPU: "50m", defaultMem: "64Mi",
		placement: fs.Spec.Rollback.Placement,
	})
}

// metricsOnly is the one port of a pod that serves nothing but its metrics
// and probes.
func metricsOnly(port int32) []corev1.ContainerPort {
	return []corev1.ContainerPort{{Name: portMetrics, ContainerPort: port, Protocol: corev1.ProtocolTCP}}
}

// seckillAffinity is the API pods' default when the spec names no affinity:
// spread over nodes where the scheduler can, so that one node lost takes
// few of them. Preferred, not required: a small cluster still runs them all.
func seckillAffinity(fs *v1alpha1.FlashSale) *corev1.Affinity {
	return &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
			Weight: 100,
			PodAffinityTerm: corev1.PodAffinityTerm{
				LabelSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(fs, ComponentSeckill)},
				TopologyKey:   corev1.LabelHostname,
			},
		}},
	}}
}

// seckillService is the buyers' entry point to the seckill pods.
func seckillService(fs *v1alpha1.FlashSale) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta(fs, Name(fs, ComponentSeckill), ComponentSeckill),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: SelectorLabels(fs, ComponentSeckill),
			Ports: []corev1.ServicePort{
				{Name: portHTTP, Port: 80, TargetPort: intstr.FromString(portHTTP), Protocol: corev1.ProtocolTCP},
				{Name: portMetrics, Port: seckillMetricsPort, TargetPort: intstr.FromString(portMetrics), Protocol: corev1.ProtocolTCP},
			},
		},
	}
}

// seckillPDB lets one API pod at a time be evicted (a node drain mid-sale).
func seckillPDB(fs *v1alpha1.FlashSale) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: meta(fs, Name(fs, ComponentSeckill), ComponentSeckill),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector:       &metav1.LabelSelector{MatchLabels: SelectorLabels(fs, ComponentSeckill)},
		},
	}
}

// seckillAutoscaler keeps the seckill pods between seckill.replicas and
// seckill.maxReplicas by CPU; nil when autoscaling is off or the sale is
// draining.
func seckillAutoscaler(fs *v1alpha1.FlashSale, t Targets) *autoscalingv2.HorizontalPodAutoscaler {
	if !t.Autoscale || fs.Spec.Seckill.MaxReplicas <= 0 {
		return nil
	}
	target := fs.Spec.Seckill.TargetCPUUtilization
	if target == 0 {
		target = v1alpha1.DefaultTargetCPUUtilization
	}
	return &autoscalingv2.HorizontalPodAutoscaler{
		TypeMeta:   metav1.TypeMeta{APIVersion: "autoscaling/v2", Kind: "HorizontalPodAutoscaler"},
		ObjectMeta: meta(fs, Name(fs, ComponentSeckill), ComponentSeckill),
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{
				APIVersion: "apps/v1", Kind: "Deployment", Name: Name(fs, ComponentSeckill),
			},
			MinReplicas: ptr.To(fs.Spec.Seckill.Replicas),
			MaxReplicas: fs.Spec.Seckill.MaxReplicas,
			Metrics: []autoscalingv2.MetricSpec{{
				Type: autoscalingv2.ResourceMetricSourceType,
				Resource: &autoscalingv2.ResourceMetricSource{
					Name:   corev1.ResourceCPU,
					Target: autoscalingv2.MetricTarget{Type: autoscalingv2.UtilizationMetricType, AverageUtilization: ptr.To(target)},
				},
			}},
			// A flash crowd arrives in a second: scale up at once, and
			// come down slowly so a second wave finds the pods still there.
			Behavior: &autoscalingv2.HorizontalPodAutoscalerBehavior{
				ScaleUp: &autoscalingv2.HPAScalingRules{
					StabilizationWindowSeconds: ptr.To[int32](0),
					Policies: []autoscalingv2.HPAScalingPolicy{
						{Type: autoscalingv2.PercentScalingPolicy, Value: 100, PeriodSeconds: 15},
					},
				},
				ScaleDown: &autoscalingv2.HPAScalingRules{StabilizationWindowSeconds: ptr.To[int32](300)},
			},
		},
	}
}

// podConfigHash changes when the pods must restart to see a change of the
// sale: what they read from sale.yaml only at start (SKU ids, prices,
// limits, times, rate limits, access lists). Stock, pause and sizes are left
// out: stock and pause reach the pods through Redis within a second, and
// rolling every pod mid-sale for a stock raise or a pause would cost the
// capacity the sale needs most.
func podConfigHash(fs *v1alpha1.FlashSale) (string, error) {
	c := fs.DeepCopy()
	c.Spec.Paused = false
	for i := range c.Spec.SKUs {
		c.Spec.SKUs[i].Stock = 0
	}
	c.Spec.Seckill = v1alpha1.Seckill{}
	c.Spec.Worker = v1alpha1.Worker{}
	c.Spec.Rollback = v1alpha1.Rollback{}
	c.Spec.Teardown = v1alpha1.Teardown{}
	b, err := SaleManifest(c)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8]), nil
}

func meta(fs *v1alpha1.FlashSale, name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: fs.Namespace, Labels: Labels(fs, component)}
}

// SecretRef returns ref, or the given key of the default endpoints Secret.
func SecretRef(ref *corev1.SecretKeySelector, defaultSecret, key string) *corev1.SecretKeySelector {
	if ref != nil {
		return ref
	}
	return &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: defaultSecret}, Key: key}
}

// commonEnv wires the dependencies from Secrets into the environment
// variables every data-plane command reads, so no secret is ever written
// into the ConfigMap or onto a command line.
func commonEnv(fs *v1alpha1.FlashSale, defaultSecret string) []corev1.EnvVar {
	fromSecret := func(name string, ref *corev1.SecretKeySelector) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref}}
	}
	redisVar := "FLASHSALE_REDIS_ADDR"
	if fs.Spec.Redis.Mode == v1alpha1.RedisCluster {
		redisVar = "FLASHSALE_REDIS_CLUSTER"
	}
	env := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		fromSecret(redisVar, SecretRef(fs.Spec.Redis.AddressSecretRef, defaultSecret, KeyRedisAddress)),
		fromSecret("FLASHSALE_MYSQL_DSN", SecretRef(fs.Spec.MySQL.DSNSecretRef, defaultSecret, KeyMySQLDSN)),
	}
	if fs.Spec.Redis.PasswordSecretRef != nil {
		env = append(env, fromSecret("FLASHSALE_REDIS_PASSWORD", fs.Spec.Redis.PasswordSecretRef))
	}
	if fs.Spec.Kafka != nil {
		env = append(env, fromSecret("FLASHSALE_KAFKA_BROKERS", SecretRef(fs.Spec.Kafka.BrokersSecretRef, defaultSecret, KeyKafkaBrokers)))
	}
	return env
}

func seckillVolumes(fs *v1alpha1.FlashSale) []volume {
	tokenSecret, tokenKey := TokenSecretName(fs), tokenKeysKey
	if fs.Spec.Token != nil && fs.Spec.Token.KeySecretRef != nil {
		tokenSecret, tokenKey = fs.Spec.Token.KeySecretRef.Name, fs.Spec.Token.KeySecretRef.Key
	}
	vols := []volume{{name: "token", dir: tokenDir, secret: tokenSecret, key: tokenKey, as: tokenKeysKey}}
	if fs.Spec.Payment != nil && fs.Spec.Payment.SecretRef != nil {
		ref := fs.Spec.Payment.SecretRef
		vols = append(vols, volume{name: "payment", dir: paymentDir, secret: ref.Name, key: ref.Key, as: paymentKey})
	}
	return vols
}

// volume is one Secret key mounted as a file; the token keys are re-read
// when the kubelet updates the file, so rotation needs no restart.
type volume struct {
	name, dir, secret, key, as string
}

type container struct {
	args []string
	env  []corev1.EnvVar
	// ports of the container; the probes and scrapes go to metricsPort,
	// which is named "metrics".
	ports       []corev1.ContainerPort
	metricsPort int32
	readyPath   string
	resources   *corev1.ResourceRequirements
	defaultCPU  string
	defaultMem  string
	volumes     []volume
	// placement is the workload's spec; affinity the operator's default
	// for it (nil: none).
	placement v1alpha1.Placement
	affinity  *corev1.Affinity
}

// deployment runs one component of the sale: our one image with the
// component's subcommand, non-root on a read-only root filesystem, placed
// where the workload's spec says.
func deployment(fs *v1alpha1.FlashSale, in PlanInput, component, hash string, replicas int32, c container) *appsv1.Deployment {
	volumes, mounts := podVolumes(fs, c.volumes)
	ctr := appContainer(fs, in, component, c, mounts)
	pod := corev1.PodSpec{
		AutomountServiceAccountToken:  ptr.To(false),
		TerminationGracePeriodSeconds: ptr.To[int64](30),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr.To(true),
			RunAsUser:      ptr.To[int64](nonRootUID),
			RunAsGroup:     ptr.To[int64](nonRootUID),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		Containers: []corev1.Container{ctr},
		Volumes:    volumes,
	}
	place(&pod, c.placement, SelectorLabels(fs, component), c.affinity)
	d := &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: meta(fs, Name(fs, component), component),
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: SelectorLabels(fs, component)},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels: withOwn(c.placement.PodLabels, Labels(fs, component)),
					// A changed sale manifest rolls the pods, which read it at start.
					Annotations: withOwn(c.placement.PodAnnotations, ownPodAnnotations(hash, c.metricsPort)),
				},
				Spec: pod,
			},
		},
	}
	return d
}

// ownPodAnnotations are the operator's annotations of a pod template.
func ownPodAnnotations(hash string, metricsPort int32) map[string]string {
	return map[string]string{
		configHashAnnot:        hash,
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(int(metricsPort)),
	}
}

// withOwn is the user's labels or annotations with the operator's own laid
// over them: the operator's select the pods and roll them, so they win (the
// API refuses the reserved keys already; this covers the others, such as
// prometheus.io/port).
func withOwn(user, own map[string]string) map[string]string {
	out := make(map[string]string, len(user)+len(own))
	maps.Copy(out, user)
	maps.Copy(out, own)
	return out
}

// place copies a workload's placement into its pod spec. An empty affinity
// keeps the operator's default; a spread constraint without a labelSelector
// selects the workload's own pods of this sale (a constraint selecting
// nothing would spread nothing).
func place(pod *corev1.PodSpec, p v1alpha1.Placement, selector map[string]string, defaultAffinity *corev1.Affinity) {
	p = *p.DeepCopy()
	pod.NodeSelector = p.NodeSelector
	pod.Tolerations = p.Tolerations
	pod.PriorityClassName = p.PriorityClassName
	pod.Affinity = defaultAffinity
	if a := p.Affinity; a != nil && (a.NodeAffinity != nil || a.PodAffinity != nil || a.PodAntiAffinity != nil) {
		pod.Affinity = a
	}
	for _, tsc := range p.TopologySpreadConstraints {
		if tsc.LabelSelector == nil {
			tsc.LabelSelector = &metav1.LabelSelector{MatchLabels: maps.Clone(selector)}
		}
		pod.TopologySpreadConstraints = append(pod.TopologySpreadConstraints, tsc)
	}
}

// appContainer is the one container of a component's pods.
func appContainer(fs *v1alpha1.FlashSale, in PlanInput, component string, c container, mounts []corev1.VolumeMount) corev1.Container {
	image := in.Image
	if fs.Spec.Image != "" {
		image = fs.Spec.Image
	}
	pull := in.PullPolicy
	if fs.Spec.ImagePullPolicy != "" {
		pull = fs.Spec.ImagePullPolicy
	}
	return corev1.Container{
		Name:            component,
		Image:           image,
		ImagePullPolicy: pull,
		Args:            c.args,
		Env:             c.env,
		Ports:           c.ports,
		ReadinessProbe:  httpProbe(c.readyPath, 2),
		LivenessProbe:   httpProbe("/healthz", 10),
		Resources:       c.resourcesOrDefault(),
		VolumeMounts:    mounts,
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			RunAsNonRoot:             ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
}

// resourcesOrDefault: what the spec asks for, else the component's defaults
// (a memory limit equal to the request, no CPU limit).
func (c container) resourcesOrDefault() corev1.ResourceRequirements {
	if c.resources != nil {
		return *c.resources.DeepCopy()
	}
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse(c.defaultCPU),
			corev1.ResourceMemory: resource.MustParse(c.defaultMem),
		},
		Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(c.defaultMem)},
	}
}

// podVolumes are the sale manifest, a writable /tmp and the component's
// Secret files, with where each is mounted.
func podVolumes(fs *v1alpha1.FlashSale, secrets []volume) ([]corev1.Volume, []corev1.VolumeMount) {
	volumes := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(fs)},
		}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	mounts := []corev1.VolumeMount{
		{Name: "config", MountPath: configDir, ReadOnly: true},
		{Name: "tmp", MountPath: "/tmp"},
	}
	for _, v := range secrets {
		volumes = append(volumes, corev1.Volume{Name: v.name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: v.secret, Items: []corev1.KeyToPath{{Key: v.key, Path: v.as}},
		}}})
		mounts = append(mounts, corev1.VolumeMount{Name: v.name, MountPath: v.dir, ReadOnly: true})
	}
	return volumes, mounts
}

func httpProbe(path string, period int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(portMetrics)}},
		PeriodSeconds: period, TimeoutSeconds: 2, FailureThreshold: 3,
	}
}

// ownedObjects are the objects a sale owns, each named as the planner names
// it, for teardown.
func ownedObjects(fs *v1alpha1.FlashSale) []client.Object {
	m := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: fs.Namespace} }
	return append([]client.Object{
		&appsv1.Deployment{ObjectMeta: m(Name(fs, ComponentSeckill))},
		&appsv1.Deployment{ObjectMeta: m(Name(fs, ComponentWorker))},
		&appsv1.Deployment{ObjectMeta: m(Name(fs, ComponentRollback))},
		&autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: m(Name(fs, ComponentSeckill))},
		&policyv1.PodDisruptionBudget{ObjectMeta: m(Name(fs, ComponentSeckill))},
		&corev1.Service{ObjectMeta: m(Name(fs, ComponentSeckill))},
		&corev1.ConfigMap{ObjectMeta: m(ConfigMapName(fs))},
		&corev1.Secret{ObjectMeta: m(TokenSecretName(fs))},
	}, ownedNetworkPolicies(fs)...)
}

// dataPlaneImage is the image of the sale's pods, and the one writer of
// status.dataPlane. The image and the pod template are a pair from one
// operator version: the old binary may not understand the new template's
// flags. So until the go-live gate opens (nobody buys yet, a rollout costs
// nothing) the sale runs the current operator's image (spec.image if set,
// else --image) with its template, and the pin follows it. Once the gate
// opened, the pin holds: an operator upgrade does not change it (see
// holdTemplates for the template); a sale without one (its pods predate the
// pin) is pinned to the image its pods run; a spec.image that differs from
// the pin is an explicit request and moves it; removing spec.image keeps it.
func (r *FlashSaleReconciler) dataPlaneImage(ctx context.Context, s *scope) (string, error) {
	st, want := &s.fs.Status, s.fs.Spec.Image
	opened := st.OpenedAt != nil
	switch {
	case !opened && want == "":
		want = r.Image
	case !opened:
	case want != "" && (st.DataPlane == nil || want != st.DataPlane.Image):
		// the user's explicit request
	case st.DataPlane != nil:
		return st.DataPlane.Image, nil
	default:
		running, err := r.runningImage(ctx, s.fs)
		if err != nil {
			return "", err
		}
		want = running
		if want == "" {
			want = r.Image
		}
	}
	st.DataPlane = &v1alpha1.DataPlaneStatus{Image: want, OperatorVersion: r.OperatorVersion}
	return want, nil
}

// runningImage is the image of the sale's seckill Deployment, "" when there
// is none yet.
func (r *FlashSaleReconciler) runningImage(ctx context.Context, fs *v1alpha1.FlashSale) (string, error) {
	var d appsv1.Deployment
	err := r.Get(ctx, client.ObjectKey{Namespace: fs.Namespace, Name: Name(fs, ComponentSeckill)}, &d)
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read seckill Deployment: %w", err)
	}
	if c := appOf(&d.Spec.Template.Spec, ComponentSeckill); c != nil {
		return c.Image, nil
	}
	return "", nil
}

// appOf is the component's container in a pod spec, nil if there is none.
func appOf(pod *corev1.PodSpec, component string) *corev1.Container {
	for i := range pod.Containers {
		if pod.Containers[i].Name == component {
			return &pod.Containers[i]
		}
	}
	return nil
}

// holdTemplates keeps a live sale's pods as another operator version
// rendered them. A new template rolls every pod of the sale, mid-sale, on
// the operator's schedule rather than the SRE's, and it must not run with
// the pinned (older) image, whose binary may refuse its flags. So once the
// gate opened, a Deployment rendered by another version (or before the
// record existed) keeps its pod template, with only what the user controls
// and the old binary understands laid over it (see overlay); its replica
// count applies as planned. The new template arrives with the next sale,
// or at once when the user names another image (spec.image): then image
// and template are both this operator's.
func (r *FlashSaleReconciler) holdTemplates(ctx context.Context, s *scope, p *Plan) error {
	if s.fs.Status.OpenedAt == nil {
		return nil // nobody buys yet: a rollout costs nothing
	}
	for _, w := range []struct {
		want      *appsv1.Deployment
		component string
	}{{p.Seckill, ComponentSeckill}, {p.Worker, ComponentWorker}, {p.Rollback, ComponentRollback}} {
		var cur appsv1.Deployment
		err := r.Get(ctx, client.ObjectKeyFromObject(w.want), &cur)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read %s Deployment: %w", w.want.Name, err)
		}
		if heldBack(s.fs, &cur, w.want, w.component) {
			overlay(s.fs, w.want, &cur, w.component)
		}
	}
	return nil
}

// heldBack: cur was rendered by another operator version, and the user did
// not ask for an image other than the one it runs.
func heldBack(fs *v1alpha1.FlashSale, cur, want *appsv1.Deployment, component string) bool {
	if v, ok := cur.Annotations[OperatorVersionAnnotation]; ok && v == want.Annotations[OperatorVersionAnnotation] {
		return false
	}
	ctr := appOf(&cur.Spec.Template.Spec, component)
	return ctr != nil && (fs.Spec.Image == "" || fs.Spec.Image == ctr.Image)
}

// overlay makes want carry cur's pod template and the record of what
// rendered it, with what the user controls taken from want: the config
// hash (a changed sale.yaml still rolls the pods to read it), the
// container's resources, and the placement, with the operator's own pod
// labels and annotations as cur has them.
func overlay(fs *v1alpha1.FlashSale, want, cur *appsv1.Deployment, component string) {
	w, t := &want.Spec.Template, cur.Spec.Template.DeepCopy()
	pl := placementOf(fs, component)
	t.Labels = withOwn(pl.PodLabels, pick(t.Labels, Labels(fs, component)))
	own := pick(t.Annotations, ownPodAnnotations("", 0))
	own[configHashAnnot] = w.Annotations[configHashAnnot]
	t.Annotations = withOwn(pl.PodAnnotations, own)
	appOf(&t.Spec, component).Resources = appOf(&w.Spec, component).Resources
	t.Spec.NodeSelector, t.Spec.Tolerations, t.Spec.Affinity = w.Spec.NodeSelector, w.Spec.Tolerations, w.Spec.Affinity
	t.Spec.TopologySpreadConstraints, t.Spec.PriorityClassName = w.Spec.TopologySpreadConstraints, w.Spec.PriorityClassName
	*w = *t
	if v, ok := cur.Annotations[OperatorVersionAnnotation]; ok {
		want.Annotations[OperatorVersionAnnotation] = v
	} else {
		delete(want.Annotations, OperatorVersionAnnotation)
	}
}

// pick is the entries of m whose keys are in keys.
func pick(m, keys map[string]string) map[string]string {
	out := map[string]string{}
	for k := range keys {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	return out
}

// placementOf is the placement the spec asks for one component.
func placementOf(fs *v1alpha1.FlashSale, component string) v1alpha1.Placement {
	switch component {
	case ComponentSeckill:
		return fs.Spec.Seckill.Placement
	case ComponentWorker:
		return fs.Spec.Worker.Placement
	default:
		return fs.Spec.Rollback.Placement
	}
}
