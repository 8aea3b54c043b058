package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/flashsale-dev/flashsale-operator/config/crd"
)

// CRDFieldManager is the server-side apply field manager `flashsale crds
// apply` (and `make upgrade-crds`) owns the CRD's fields with.
const CRDFieldManager = "flashsale-operator"

// newCRDsCommand is `flashsale crds`: the supported way to install and
// upgrade the CRDs, which `helm upgrade` never does (Helm only creates what
// a chart's crds/ holds, on first install).
func newCRDsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "crds",
		Short: "Install or upgrade the FlashSale CRD this binary was built with",
	}
	cmd.AddCommand(newCRDsApplyCommand())
	return cmd
}

func newCRDsApplyCommand() *cobra.Command {
	var kubeconfig string
	var dryRun bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Server-side apply the embedded FlashSale CRD to the cluster and print what changed",
		Long: `Server-side applies the FlashSale CRD embedded in this binary (field manager
"` + CRDFieldManager + `", forcing ownership of conflicting fields) to the cluster of the
current kubeconfig (--kubeconfig, else KUBECONFIG, ~/.kube/config or the pod's
service account), waits until it is Established, and prints the versions and
fields added or removed. Run it before 'helm upgrade': Helm never upgrades a
chart's crds/. It is server-side because the CRD is too large for the
last-applied annotation of a client-side 'kubectl apply' to stay safe.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := restConfig(kubeconfig)
			if err != nil {
				return err
			}
			c, err := client.New(cfg, client.Options{Scheme: crdScheme()})
			if err != nil {
				return fmt.Errorf("connecting to the API server %s: %w", cfg.Host, err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return ApplyCRDs(ctx, c, cmd.OutOrStdout(), dryRun)
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: KUBECONFIG, ~/.kube/config, or in-cluster)")
	f.BoolVar(&dryRun, "dry-run", false, "send the apply with dryRun=All: print what would change, change nothing")
	f.DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long (the apply and the wait for Established)")
	return cmd
}

// crdScheme knows the CustomResourceDefinition kind (client-go's scheme
// does not).
func crdScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(apiextensionsv1.AddToScheme(s))
	return s
}

// restConfig loads kubeconfig (explicit path, else the default loading
// rules), falling back to the pod's service account, as kubectl does.
func restConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the kubeconfig: %w", err)
	}
	return cfg, nil
}

// EmbeddedCRDs returns the CRDs this binary carries (config/crd), as the
// objects to apply: no status, no server-set metadata.
func EmbeddedCRDs() ([]*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(crd.FlashSales, &u.Object); err != nil {
		return nil, fmt.Errorf("the embedded CRD is not YAML: %w", err)
	}
	unstructured.RemoveNestedField(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	return []*unstructured.Unstructured{u}, nil
}

// ApplyCRDs server-side applies the embedded CRDs with c and writes to out,
// per CRD, what changed. With dryRun nothing is stored.
func ApplyCRDs(ctx context.Context, c client.Client, out io.Writer, dryRun bool) error {
	crds, err := EmbeddedCRDs()
	if err != nil {
		return err
	}
	for _, u := range crds {
		if err := applyCRD(ctx, c, out, u, dryRun); err != nil {
			return err
		}
	}
	return nil
}

func applyCRD(ctx context.Context, c client.Client, out io.Writer, u *unstructured.Unstructured, dryRun bool) error {
	name := u.GetName()
	var before apiextensionsv1.CustomResourceDefinition
	err := c.Get(ctx, client.ObjectKey{Name: name}, &before)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading CRD %s: %w", name, err)
	}
	opts := []client.ApplyOption{client.FieldOwner(CRDFieldManager), client.ForceOwnership}
	if dryRun {
		opts = append(opts, client.DryRunAll)
	}
	applied := u.DeepCopy()
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(applied), opts...); err != nil {
		return fmt.Errorf("server-side apply of CRD %s: %w", name, err)
	}
	var after apiextensionsv1.CustomResourceDefinition
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(applied.Object, &after); err != nil {
		return fmt.Errorf("the applied CRD %s: %w", name, err)
	}
	suffix := ""
	if dryRun {
		suffix = " (dry run: nothing changed)"
	}
	if !exists {
		_, err = fmt.Fprintf(out, "customresourcedefinition/%s created%s: versions %s\n", name, suffix, strings.Join(versionNames(&after), ", "))
	} else {
		err = writeCRDChanges(out, &before, &after, suffix)
	}
	if err != nil || dryRun {
		return err
	}
	if err := dropOtherOwners(ctx, c, &after); err != nil {
		return err
	}
	return waitEstablished(ctx, c, name)
}

// writeCRDChanges prints, per version, the served/storage flags and the
// schema fields added or removed between before and after.
func writeCRDChanges(out io.Writer, before, after *apiextensionsv1.CustomResourceDefinition, suffix string) error {
	var lines []string
	old := map[string]apiextensionsv1.CustomResourceDefinitionVersion{}
	for _, v := range before.Spec.Versions {
		old[v.Name] = v
	}
	for _, v := range after.Spec.Versions {
		prev, ok := old[v.Name]
		delete(old, v.Name)
		if !ok {
			lines = append(lines, fmt.Sprintf("  %s: new version (served %t, storage %t)", v.Name, v.Served, v.Storage))
			continue
		}
		if prev.Served != v.Served || prev.Storage != v.Storage {
			lines = append(lines, fmt.Sprintf("  %s: served %t -> %t, storage %t -> %t", v.Name, prev.Served, v.Served, prev.Storage, v.Storage))
		}
		added, removed := diffFields(schemaFields(prev.Schema), schemaFields(v.Schema))
		lines = append(lines, fieldLines(v.Name, "added", added)...)
		lines = append(lines, fieldLines(v.Name, "removed", removed)...)
	}
	for name := range old {
		lines = append(lines, fmt.Sprintf("  %s: version removed", name))
	}
	head := fmt.Sprintf("customresourcedefinition/%s unchanged%s\n", after.Name, suffix)
	if after.ResourceVersion != before.ResourceVersion || len(lines) > 0 {
		head = fmt.Sprintf("customresourcedefinition/%s configured%s\n", after.Name, suffix)
	}
	_, err := io.WriteString(out, head+joinLines(lines))
	return err
}

func fieldLines(version, what string, fields []string) []string {
	if len(fields) == 0 {
		return nil
	}
	lines := []string{fmt.Sprintf("  %s: %d field(s) %s:", version, len(fields), what)}
	for _, f := range fields {
		lines = append(lines, "    "+f)
	}
	return lines
}

func joinLines(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

func versionNames(c *apiextensionsv1.CustomResourceDefinition) []string {
	var names []string
	for _, v := range c.Spec.Versions {
		names = append(names, v.Name)
	}
	return names
}

// schemaFields lists the property paths of a version's schema
// (spec.seckill.nodeSelector; array items as []).
func schemaFields(v *apiextensionsv1.CustomResourceValidation) map[string]bool {
	fields := map[string]bool{}
	if v != nil && v.OpenAPIV3Schema != nil {
		walkSchema("", v.OpenAPIV3Schema, fields)
	}
	return fields
}

func walkSchema(prefix string, s *apiextensionsv1.JSONSchemaProps, fields map[string]bool) {
	for name, p := range s.Properties {
		path := strings.TrimPrefix(prefix+"."+name, ".")
		fields[path] = true
		walkSchema(path, &p, fields)
	}
	if s.Items != nil && s.Items.Schema != nil {
		walkSchema(prefix+"[]", s.Items.Schema, fields)
	}
	if s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil {
		walkSchema(prefix+"{}", s.AdditionalProperties.Schema, fields)
	}
}

// diffFields returns the fields only in after (added) and only in before
// (removed), each without the fields under an added or removed parent: a
// new spec.seckill.affinity is one line, not a hundred.
func diffFields(before, after map[string]bool) (added, removed []string) {
	return topmost(after, before), topmost(before, after)
}

func topmost(in, notIn map[string]bool) []string {
	var only []string
	for f := range in {
		if !notIn[f] {
			only = append(only, f)
		}
	}
	slices.Sort(only)
	var top []string
	for _, f := range only {
		if n := len(top); n > 0 && isUnder(f, top[n-1]) {
			continue
		}
		top = append(top, f)
	}
	return top
}

func isUnder(field, parent string) bool {
	rest, ok := strings.CutPrefix(field, parent)
	return ok && (strings.HasPrefix(rest, ".") || strings.HasPrefix(rest, "[]") || strings.HasPrefix(rest, "{}"))
}

// dropOtherOwners leaves the CRD's spec to CRDFieldManager alone. Helm
// creates a chart's crds/ with its own field manager; while it co-owns a
// field, a later apply that no longer sets it (a field removed from the
// schema) would leave it in place. Entries of status (the API server's) stay.
func dropOtherOwners(ctx context.Context, c client.Client, applied *apiextensionsv1.CustomResourceDefinition) error {
	var keep []metav1.ManagedFieldsEntry
	for _, e := range applied.ManagedFields {
		if e.Manager == CRDFieldManager || e.Subresource != "" {
			keep = append(keep, e)
		}
	}
	if len(keep) == len(applied.ManagedFields) {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"managedFields": keep, "resourceVersion": applied.ResourceVersion,
	}})
	if err != nil {
		return err
	}
	obj := &apiextensionsv1.CustomResourceDefinition{ObjectMeta: metav1.ObjectMeta{Name: applied.Name}}
	if err := c.Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(CRDFieldManager)); err != nil {
		return fmt.Errorf("taking sole ownership of CRD %s's fields: %w", applied.Name, err)
	}
	return nil
}

// waitEstablished waits until the API server serves the CRD's (new) schema:
// a FlashSale created right after the apply is then checked against it.
func waitEstablished(ctx context.Context, c client.Client, name string) error {
	var last string
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		var got apiextensionsv1.CustomResourceDefinition
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &got); err != nil {
			last = err.Error()
			return false, nil
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
			if cond.Type == apiextensionsv1.NamesAccepted && cond.Status == apiextensionsv1.ConditionFalse {
				last = "names not accepted: " + cond.Message
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("CRD %s not Established: %w (%s)", name, err, last)
	}
	return nil
}
