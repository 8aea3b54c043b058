// Package kubectl is the kubectl plugin `kubectl flashsale`: the same binary
// as flashsale, found by kubectl on the PATH as kubectl-flashsale (krew's
// convention). It shows a sale (status), flips its switches and stock by
// patching the FlashSale's spec, so GitOps tools and the operator see every
// change, and audits it against the sale's own Redis and MySQL.
package kubectl

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
)

// BinaryName is the name kubectl finds the plugin by on the PATH; main runs
// the plugin's root when invoked under it.
const BinaryName = "kubectl-flashsale"

// options are what every command shares: how to reach the cluster.
type options struct {
	flags *genericclioptions.ConfigFlags
}

// NewRoot returns the `kubectl flashsale` command with its subcommands and
// kubectl's usual kubeconfig flags (--kubeconfig, --context, -n ...).
func NewRoot() *cobra.Command {
	o := &options{flags: genericclioptions.NewConfigFlags(true)}
	root := &cobra.Command{
		Use: "flashsale",
		// krew's convention: usage reads as the user types it.
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl flashsale"},
		Short:       "Watch and steer FlashSales: status, pause, resume, close, stock, audit",
		Long: `kubectl flashsale shows a FlashSale on one screen and changes it the way
GitOps tools see it: every action is a patch of the FlashSale's spec, which
the operator then applies. Nothing is written to Redis behind its back.`,
		SilenceUsage: true,
	}
	o.flags.AddFlags(root.PersistentFlags())
	root.AddCommand(newStatusCommand(o), newPauseCommand(o), newResumeCommand(o), newCloseCommand(o),
		newAddStockCommand(o), newSetStockCommand(o), newAuditCommand(o))
	return root
}

// newScheme knows FlashSales, Secrets and events.k8s.io Events.
func newScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// client returns a client of the cluster the flags name and the namespace
// to work in (-n, else the kubeconfig context's, else "default").
func (o *options) client() (client.Client, string, error) {
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, "", err
	}
	ns, _, err := o.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", err
	}
	s, err := newScheme()
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, "", fmt.Errorf("connect to the cluster: %w", err)
	}
	return c, ns, nil
}

// getSale reads the sale, with an error that names it when it does not exist.
func getSale(ctx context.Context, c client.Reader, ns, name string) (*v1alpha1.FlashSale, error) {
	var fs v1alpha1.FlashSale
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &fs); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("flashsale %q not found in namespace %q", name, ns)
		}
		return nil, fmt.Errorf("read flashsale %s/%s: %w", ns, name, err)
	}
	return &fs, nil
}

// ref names a sale in answers, as kubectl names what it changed.
func ref(fs *v1alpha1.FlashSale) string { return "flashsale.dev/" + fs.Name }
