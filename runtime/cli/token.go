package cli

import (
	"bufio"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/runtime/sale/manifest"
)

// newTokenCommand mints path tokens offline with the sale's key: for smoke
// tests of a live sale and for load generators that cannot compute HMACs.
func newTokenCommand() *cobra.Command {
	var (
		file, sku, prefix string
		users             int
		tok               tokenFlags
	)
	cmd := &cobra.Command{
		Use:   "token --file sale.yaml --sku ID [--users N --user-prefix u]",
		Short: "Mint purchase tokens with the sale's key (one \"user token\" line each)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs, err := manifest.Load(file)
			if err != nil {
				return err
			}
			if _, ok := fs.SKU(sku); !ok {
				return fmt.Errorf("sale %s has no SKU %q", fs.SaleKey(), sku)
			}
			signer, err := tok.signer(cmd, fs.TokenTTL(), newLogger("text"))
			if err != nil {
				return err
			}
			w := bufio.NewWriterSize(cmd.OutOrStdout(), 1<<16)
			for i := range users {
				user := fmt.Sprintf("%s%d", prefix, i)
				t, _, err := signer.Issue(fs.SaleKey(), sku, user)
				if err != nil {
					return err
				}
				fmt.Fprintf(w, "%s %s\n", user, t)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "FlashSale manifest")
	_ = cmd.MarkFlagRequired("file")
	cmd.Flags().StringVar(&sku, "sku", "", "SKU the tokens are for")
	_ = cmd.MarkFlagRequired("sku")
	cmd.Flags().IntVar(&users, "users", 1, "how many distinct users")
	cmd.Flags().StringVar(&prefix, "user-prefix", "u", "user ids are this prefix followed by 0..N-1")
	tok.bind(cmd)
	return cmd
}
