package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/controllers"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/redisconn"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
	"github.com/flashsale-dev/flashsale-operator/runtime/sale/plan"
)

// imageRepository is where the chart takes the operator's image from (its
// values.yaml image.repository); the tag is this binary's version.
const imageRepository = "ghcr.io/flashsale-dev/flashsale-operator"

// errWarnings is plan's exit status with --fail-on-warning: the plan was
// printed, and it does not fit.
var errWarnings = errors.New("the plan has warnings (--fail-on-warning)")

type planFlags struct {
	file          string
	primaries     int
	check         bool
	output        string
	image         string
	failOnWarning bool
	netpol        bool
	figures       plan.Figures
	redis         redisconn.Options
	dsn           string
	brokers       []string
}

func newPlanCommand() *cobra.Command {
	var pf planFlags
	cmd := &cobra.Command{
		Use:   "plan --file sale.yaml [--redis-primaries N] [--check] [-o text|json]",
		Short: "Size a sale before it runs: objects, Redis keys and memory, load per shard, pipeline, warm-up",
		Long: `plan prints what the operator will create for the sale and whether its expected load
(spec.expected) fits: the Redis keys and their memory at the expected buyers, purchases per
second per Redis shard against the per-shard budget, workers against Kafka partitions, the
MySQL insert rate against the pipeline's measured rate, and the warm-up lead against the
pods' start-up. Warnings say in plain words what does not fit. The operator sets the same
verdict as the sale's Planned condition.

Without --check it touches nothing: no cluster, no Redis. With --check it pings Redis (and
MySQL and Kafka when given), reads the number of Redis primaries and reports reachability.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runPlan(cmd.Context(), cmd.OutOrStdout(), &pf) },
	}
	f := cmd.Flags()
	f.StringVarP(&pf.file, "file", "f", "", "FlashSale manifest (the YAML you would kubectl apply)")
	_ = cmd.MarkFlagRequired("file")
	f.IntVar(&pf.primaries, "redis-primaries", 1, "Redis primaries the sale runs on (1: standalone); --check reads it from Redis")
	f.BoolVar(&pf.check, "check", false, "ping Redis (and MySQL, Kafka when given) and read the primaries from Redis")
	f.StringVarP(&pf.output, "output", "o", "text", "text or json")
	f.StringVar(&pf.image, "image", imageRepository+":"+Version(), "image of the data-plane pods (the operator's --image)")
	f.BoolVar(&pf.failOnWarning, "fail-on-warning", false, "exit 1 when the plan has warnings (for CI)")
	f.BoolVar(&pf.netpol, "network-policies", false, "the operator runs with --network-policies: list the sale's NetworkPolicies")
	def := plan.DefaultFigures()
	f.Int64Var(&pf.figures.ShardBudget, "shard-budget", def.ShardBudget, "purchases per second one Redis shard admits (make bench)")
	f.Int64Var(&pf.figures.PipelineRate, "pipeline-rate", def.PipelineRate, "orders per second the pipeline stores in MySQL (hack/pipelinebench)")
	f.DurationVar(&pf.figures.PodStartup, "pod-startup", def.PodStartup, "how long the sale's pods take to become ready")
	pf.redis.Bind(f)
	f.StringVar(&pf.dsn, "mysql-dsn", "", "with --check: the orders database to ping; env "+envMySQLDSN)
	fromEnv(f, "mysql-dsn", envMySQLDSN)
	f.StringSliceVar(&pf.brokers, "kafka-brokers", nil, "with --check: Kafka brokers to reach, comma separated; env "+envKafkaBrokers)
	fromEnv(f, "kafka-brokers", envKafkaBrokers)
	return cmd
}

// validate refuses flags that make no plan, naming them.
func (pf *planFlags) validate() error {
	switch {
	case pf.output != "text" && pf.output != "json":
		return fmt.Errorf("--output %q: want text or json", pf.output)
	case pf.primaries < 1:
		return fmt.Errorf("--redis-primaries %d: want 1 or more", pf.primaries)
	case pf.figures.ShardBudget <= 0:
		return fmt.Errorf("--shard-budget %d: want a positive rate", pf.figures.ShardBudget)
	case pf.figures.PipelineRate <= 0:
		return fmt.Errorf("--pipeline-rate %d: want a positive rate", pf.figures.PipelineRate)
	case pf.figures.PodStartup <= 0:
		return fmt.Errorf("--pod-startup %s: want a positive duration", pf.figures.PodStartup)
	case pf.image == "":
		return errors.New("--image: want the image of the data-plane pods")
	}
	return nil
}

func runPlan(ctx context.Context, out io.Writer, pf *planFlags) error {
	if err := pf.validate(); err != nil {
		return err
	}
	sale, err := manifest.Load(pf.file)
	if err != nil {
		return err
	}
	topo := plan.Topology{Primaries: pf.primaries, Source: "--redis-primaries"}
	var reach []string
	if pf.check {
		if topo, reach, err = pf.checkDeps(ctx); err != nil {
			return err
		}
	}
	objs, err := controllers.PlannedObjects(sale, controllers.PlanInput{Image: pf.image, DefaultSecret: controllers.DefaultEndpointsSecret,
		NetworkPolicy: controllers.NetworkPolicyConfig{Enabled: pf.netpol}})
	if err != nil {
		return err
	}
	p := plan.Compute(sale, topo, pf.figures, objs)
	if pf.output == "json" {
		b, err := p.JSON()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		if err != nil {
			return err
		}
	} else {
		text := p.Text()
		if len(reach) > 0 {
			text = "Reachability\n  " + strings.Join(reach, "\n  ") + "\n\n" + text
		}
		if _, err := io.WriteString(out, text); err != nil {
			return err
		}
	}
	if pf.failOnWarning && !p.Fits() {
		return errWarnings
	}
	return nil
}

// checkDeps pings Redis and reads its primaries, then pings MySQL and Kafka
// when given. An unreachable Redis is an error (there is no topology to
// plan with); MySQL and Kafka are reported.
func (pf *planFlags) checkDeps(ctx context.Context) (plan.Topology, []string, error) {
	rdb, err := pf.redis.Client(ctx)
	if err != nil {
		return plan.Topology{}, nil, fmt.Errorf("--check: %w", err)
	}
	defer func() { _ = rdb.Close() }()
	n, err := controllers.Primaries(ctx, rdb)
	if err != nil {
		return plan.Topology{}, nil, fmt.Errorf("--check: %w", err)
	}
	reach := []string{"Redis: reachable, " + plan.Plural(n, "primary", "primaries")}
	if pf.dsn != "" {
		db, err := openOrderDB(ctx, pf.dsn)
		if err != nil {
			reach = append(reach, "MySQL: NOT reachable: "+err.Error())
		} else {
			_ = db.Close()
			reach = append(reach, "MySQL: reachable")
		}
	}
	if len(pf.brokers) > 0 {
		reach = append(reach, "Kafka: "+kafkaReach(pf.brokers))
	}
	return plan.Topology{Primaries: n, Source: "Redis (--check)"}, reach, nil
}

// kafkaReach connects to the brokers and reads their metadata.
func kafkaReach(brokers []string) string {
	cfg := kafkautil.Options{Brokers: brokers, ClientID: "flashsale-plan"}.Config()
	cfg.Net.DialTimeout, cfg.Metadata.Retry.Max = 5*time.Second, 0
	c, err := sarama.NewClient(brokers, cfg)
	if err != nil {
		return "NOT reachable: " + err.Error()
	}
	defer func() { _ = c.Close() }()
	return "reachable, " + plan.Plural(len(c.Brokers()), "broker", "brokers")
}
