package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// newCheckInstallCommand is `flashsale check-install`, what the chart's
// `helm test` Pod runs: is the operator up, and is the FlashSale CRD served?
func newCheckInstallCommand() *cobra.Command {
	var kubeconfig, healthURL string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "check-install",
		Short: "Check that the operator answers its health endpoint and the FlashSale CRD is served",
		Long: `Checks an installation: GET --health-url must answer 200, and the API server's
discovery must list flashsales in ` + v1alpha1.GroupVersion.String() + `. Retries until --timeout (an
operator just installed may still be starting), then exits non-zero saying
which check failed. The chart's helm test Pod runs it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if healthURL == "" {
				return errors.New("--health-url is required (e.g. http://flashsale-operator-metrics.flashsale-system.svc:8081/healthz)")
			}
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			dc, err := discovery.NewDiscoveryClientForConfig(cfg)
			if err != nil {
				return fmt.Errorf("discovery client for %s: %w", cfg.Host, err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return CheckInstall(ctx, cmd.OutOrStdout(), InstallCheck{HealthURL: healthURL, Discovery: dc, HTTP: http.DefaultClient})
		},
	}
	f := cmd.Flags()
	f.StringVar(&healthURL, "health-url", "", "the operator's health endpoint, e.g. http://SERVICE:8081/healthz")
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster)")
	f.DurationVar(&timeout, "timeout", time.Minute, "keep retrying the checks this long before failing")
	return cmd
}

// GroupVersionLister is the part of the discovery client CheckInstall uses.
type GroupVersionLister interface {
	ServerResourcesForGroupVersion(groupVersion string) (*metav1.APIResourceList, error)
}

// InstallCheck is what CheckInstall checks.
type InstallCheck struct {
	// HealthURL is the operator's /healthz, through its Service.
	HealthURL string
	// Discovery is the API server's discovery.
	Discovery GroupVersionLister
	// HTTP fetches HealthURL.
	HTTP *http.Client
}

// CheckInstall runs both checks until they pass or ctx ends; then it
// returns an error naming each check that still fails.
func CheckInstall(ctx context.Context, out io.Writer, c InstallCheck) error {
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		healthErr := checkHealth(ctx, c.HTTP, c.HealthURL)
		crdErr := checkCRDServed(c.Discovery)
		if healthErr == nil && crdErr == nil {
			_, err := fmt.Fprintf(out, "ok: the operator answers %s, and %s flashsales is served\n", c.HealthURL, v1alpha1.GroupVersion)
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("check-install failed: %w", errors.Join(healthErr, crdErr))
		case <-tick.C:
		}
	}
}

func checkHealth(ctx context.Context, hc *http.Client, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("--health-url %q: %w", url, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("the operator's health endpoint %s does not answer: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the operator's health endpoint %s answered %s: %s", url, resp.Status, body)
	}
	return nil
}

func checkCRDServed(dc GroupVersionLister) error {
	gv := v1alpha1.GroupVersion.String()
	list, err := dc.ServerResourcesForGroupVersion(gv)
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("the API server does not serve %s: the FlashSale CRD is not installed (make upgrade-crds, or flashsale crds apply)", gv)
	}
	if err != nil {
		return fmt.Errorf("discovery of %s: %w", gv, err)
	}
	for _, r := range list.APIResources {
		if r.Name == "flashsales" && r.Kind == "FlashSale" {
			return nil
		}
	}
	return fmt.Errorf("the API server serves %s but not its flashsales resource: the FlashSale CRD is not installed", gv)
}
