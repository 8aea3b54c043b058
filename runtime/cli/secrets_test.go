package cli_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/spf13/cobra"

	"github.com/flashsale-dev/flashsale-operator/runtime/cli"
	"github.com/flashsale-dev/flashsale-operator/test/testutil"
)

// flashsaleMainEnv, set to 1, makes this test binary the flashsale binary
// (main.go's main), so a test can run a command as a process of its own and
// read what it logs to its real stderr.
const flashsaleMainEnv = "FLASHSALE_CLI_TEST_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(flashsaleMainEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		root := cli.NewRoot()
		root.SetArgs(os.Args[1:])
		err := root.ExecuteContext(ctx)
		stop()
		if err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// secretEnv is every environment variable holding a secret or the path of
// one, set to a value no help text or log line has any business printing.
func secretEnv(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{ //nolint:gosec // G101: fake secrets, there to be looked for in the output
		"FLASHSALE_MYSQL_DSN":           "helpuser:Dsn-Pw-9f3e1c@tcp(orders-db.example:3306)/shop",
		"FLASHSALE_PAYMENT_SECRET":      "Pay-Secret-5b7d2a",
		"FLASHSALE_PAYMENT_SECRET_FILE": "/run/secrets/Pay-File-81c4e0",
		"FLASHSALE_TOKEN_KEYS":          "hex:" + strings.Repeat("7e", 32),
		"FLASHSALE_TOKEN_KEY_FILE":      "/run/secrets/Token-File-3a9b6f",
		"FLASHSALE_REDIS_PASSWORD":      "Redis-Pw-c2e8d4",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	return env
}

// commands is every command under root, root included.
func commands(root *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{root}
	for _, c := range root.Commands() {
		out = append(out, commands(c)...)
	}
	return out
}

// TestHelpShowsNoSecrets runs --help of every command with the secrets in
// the environment: none of them may appear (a flag defaulting to an env var
// prints it as its default), and the help of --mysql-dsn still names its
// env var, so the variable stays discoverable.
func TestHelpShowsNoSecrets(t *testing.T) {
	env := secretEnv(t)
	all := commands(cli.NewRoot())
	if len(all) < 10 {
		t.Fatalf("found %d commands under the root, want all of them (manager, seckill, worker, ...)", len(all))
	}
	for _, c := range all {
		args := strings.Fields(c.CommandPath())[1:]
		args = append(args, "--help")
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, err := run(context.Background(), args...)
			if err != nil || !strings.Contains(out, "Usage:") {
				t.Fatalf("%v: err %v, output %q", args, err, out)
			}
			for k, v := range env {
				if strings.Contains(out, v) {
					t.Errorf("--help of %q prints the value of %s (%q):\n%s", c.CommandPath(), k, v, out)
				}
			}
			if c.Flags().Lookup("mysql-dsn") != nil && !strings.Contains(out, "FLASHSALE_MYSQL_DSN") {
				t.Errorf("--help of %q does not name FLASHSALE_MYSQL_DSN for --mysql-dsn:\n%s", c.CommandPath(), out)
			}
		})
	}
}

// TestSecretsStayOutOfLogs runs migrate, the worker and the seckill as
// processes of their own with a DSN carrying a password (of a MariaDB user
// made for the test), the payment secret and token keys only in the
// environment. The environment takes effect (migrate builds the schema of
// the user's database, the seckill has its pay endpoint configured, the
// worker logs which database it uses) and no secret is in their output.
func TestSecretsStayOutOfLogs(t *testing.T) {
	path, _ := writeSale(t)
	if _, err := run(context.Background(), "warm", "--file", path); err != nil {
		t.Fatal(err)
	}
	admin, dsn, password := mysqlUserWithPassword(t)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"FLASHSALE_MYSQL_DSN=" + dsn, "FLASHSALE_PAYMENT_SECRET=Pay-Secret-5b7d2a",
		"FLASHSALE_TOKEN_KEYS=hex:" + strings.Repeat("7e", 32)}
	secrets := []string{password, "Pay-Secret-5b7d2a", strings.Repeat("7e", 32)}

	out, err := runProcess(t, env, "migrate")
	noSecrets(t, "migrate", out, secrets)
	if err != nil || !strings.Contains(out, "schema at version") {
		t.Fatalf("migrate with the DSN from the environment: %v\n%s", err, out)
	}
	var tables int
	if err := admin.QueryRow(`SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = 'seckill_order'`,
		cfg.DBName).Scan(&tables); err != nil || tables != 1 {
		t.Fatalf("migrate did not build the schema in %s (tables %d, err %v)", cfg.DBName, tables, err)
	}

	w := startProcess(t, env, "worker", "--file", path, "--metrics-addr", "")
	w.waitFor(t, "Running the order pipeline")
	redacted := cfg.User + ":xxxxx@tcp(" + cfg.Addr + ")/" + cfg.DBName
	if !strings.Contains(w.output(), redacted) {
		t.Errorf("the worker's start-up line does not name its database as %q:\n%s", redacted, w.output())
	}
	noSecrets(t, "worker", w.output(), secrets)

	port := testutil.FreePort(t)
	s := startProcess(t, env, "seckill", "--file", path, "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	s.waitFor(t, "Serving the purchase API")
	if o := s.output(); strings.Contains(o, "NOT_CONFIGURED") || strings.Contains(o, "NO TOKEN KEY") {
		t.Errorf("the seckill ignored a secret from the environment:\n%s", o)
	}
	noSecrets(t, "seckill", s.output(), secrets)
}

func noSecrets(t *testing.T, what, out string, secrets []string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("%s printed the secret %q:\n%s", what, s, out)
		}
	}
}

// mysqlUserWithPassword makes a fresh database and a MariaDB user with a
// password allowed only on it, and returns a root connection, the user's
// DSN of that database and the password. Both go at cleanup.
func mysqlUserWithPassword(t *testing.T) (admin *sql.DB, dsn, password string) {
	t.Helper()
	admin, rootDSN := testutil.MySQL(t)
	cfg, err := mysql.ParseDSN(rootDSN)
	if err != nil {
		t.Fatal(err)
	}
	user := "u_" + strings.TrimPrefix(cfg.DBName, "t_")
	password = "Log-Pw-" + strings.TrimPrefix(cfg.DBName, "t_")
	for _, q := range []string{
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", user, password),
		fmt.Sprintf("GRANT ALL ON `%s`.* TO '%s'@'%%'", cfg.DBName, user),
	} {
		if _, err := admin.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() { _, _ = admin.Exec(fmt.Sprintf("DROP USER '%s'@'%%'", user)) })
	ucfg := mysql.NewConfig()
	ucfg.User, ucfg.Passwd, ucfg.Net, ucfg.Addr, ucfg.DBName = user, password, "tcp", cfg.Addr, cfg.DBName
	return admin, ucfg.FormatDSN(), password
}

// process is a flashsale command running as a process of its own, with
// its stdout and stderr collected.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	mu   sync.Mutex
	out  bytes.Buffer
}

func (p *process) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// flashsaleCommand is this test binary as the flashsale binary with the
// given environment (on top of the test's, with any secrets the test set).
func flashsaleCommand(env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...) //nolint:gosec // re-executes this very test binary
	cmd.Env = append(append(os.Environ(), flashsaleMainEnv+"=1"), env...)
	return cmd
}

// runProcess runs a command to its end and returns its output.
func runProcess(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := flashsaleCommand(env, args...)
	cmd.WaitDelay = time.Minute
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// startProcess starts a long-running command; it is stopped (SIGTERM, then
// killed) when the test ends.
func startProcess(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	p := &process{cmd: flashsaleCommand(env, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitFor waits up to 30 s for a line containing s in the output.
func (p *process) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.output(), s) {
		select {
		case <-p.done:
			t.Fatalf("%v exited without logging %q:\n%s", p.cmd.Args[1:], s, p.output())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v never logged %q:\n%s", p.cmd.Args[1:], s, p.output())
		}
	}
}
