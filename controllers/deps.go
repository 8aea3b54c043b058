package controllers

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/IBM/sarama"
	"github.com/redis/go-redis/v9"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/flashsale-dev/flashsale-operator/api/v1alpha1"
	"github.com/flashsale-dev/flashsale-operator/runtime/orders/orderdb"
	"github.com/flashsale-dev/flashsale-operator/runtime/plumbing/kafkautil"
)

// Endpoints are a sale's dependencies, read from its Secrets.
type Endpoints struct {
	RedisAddrs    []string
	RedisCluster  bool
	RedisPassword string
	MySQLDSN      string
	// KafkaBrokers is empty when the sale runs without Kafka.
	KafkaBrokers []string
}

func (e Endpoints) fingerprint() string {
	h := sha256.New()
	fmt.Fprintf(h, "%v|%v|%s|%s|%v", e.RedisAddrs, e.RedisCluster, e.RedisPassword, e.MySQLDSN, e.KafkaBrokers)
	return hex.EncodeToString(h.Sum(nil))
}

// ConfigError is a configuration a human must fix (a missing Secret or key, a
// malformed value). It puts the sale into Failed with the reason in a
// condition and an Event, rather than retrying in a hot loop.
type ConfigError struct {
	Reason string
	Msg    string
}

func (e *ConfigError) Error() string { return e.Msg }

// resolveEndpoints reads the sale's Secrets. It reads through r.APIReader,
// not the cache, so the operator need not watch every Secret of the cluster.
func (r *FlashSaleReconciler) resolveEndpoints(ctx context.Context, fs *v1alpha1.FlashSale) (Endpoints, error) {
	return ResolveEndpoints(ctx, r.APIReader, r.DefaultSecret, fs)
}

// ResolveEndpoints reads the sale's Secrets through reader, falling back to
// the keys of defaultSecret (in the sale's namespace) where the sale names
// none. `kubectl flashsale audit` resolves them the way the operator does.
func ResolveEndpoints(ctx context.Context, reader client.Reader, defaultSecret string, fs *v1alpha1.FlashSale) (Endpoints, error) {
	get := func(ref *corev1.SecretKeySelector, field string) (string, error) {
		var s corev1.Secret
		err := reader.Get(ctx, types.NamespacedName{Namespace: fs.Namespace, Name: ref.Name}, &s)
		if apierrors.IsNotFound(err) {
			return "", &ConfigError{Reason: v1alpha1.ReasonSecretMissing,
				Msg: fmt.Sprintf("%s: Secret %s/%s not found", field, fs.Namespace, ref.Name)}
		}
		if err != nil {
			return "", fmt.Errorf("read Secret %s/%s: %w", fs.Namespace, ref.Name, err)
		}
		v, ok := s.Data[ref.Key]
		if !ok || strings.TrimSpace(string(v)) == "" {
			return "", &ConfigError{Reason: v1alpha1.ReasonSecretMissing,
				Msg: fmt.Sprintf("%s: Secret %s/%s has no key %q (or it is empty)", field, fs.Namespace, ref.Name, ref.Key)}
		}
		return strings.TrimSpace(string(v)), nil
	}
	var e Endpoints
	spec := &fs.Spec
	addr, err := get(SecretRef(spec.Redis.AddressSecretRef, defaultSecret, KeyRedisAddress), "spec.redis.addressSecretRef")
	if err != nil {
		return e, err
	}
	e.RedisAddrs = splitList(addr)
	e.RedisCluster = spec.Redis.Mode == v1alpha1.RedisCluster
	if len(e.RedisAddrs) != 1 && !e.RedisCluster {
		return e, &ConfigError{Reason: v1alpha1.ReasonConfigInvalid,
			Msg: fmt.Sprintf("spec.redis: %d addresses given for a standalone Redis; set spec.redis.mode: cluster for a Redis Cluster", len(e.RedisAddrs))}
	}
	if spec.Redis.PasswordSecretRef != nil {
		if e.RedisPassword, err = get(spec.Redis.PasswordSecretRef, "spec.redis.passwordSecretRef"); err != nil {
			return e, err
		}
	}
	if e.MySQLDSN, err = get(SecretRef(spec.MySQL.DSNSecretRef, defaultSecret, KeyMySQLDSN), "spec.mysql.dsnSecretRef"); err != nil {
		return e, err
	}
	if spec.Kafka != nil {
		b, err := get(SecretRef(spec.Kafka.BrokersSecretRef, defaultSecret, KeyKafkaBrokers), "spec.kafka.brokersSecretRef")
		if err != nil {
			return e, err
		}
		e.KafkaBrokers = splitList(b)
	}
	for _, ref := range []struct {
		ref   *corev1.SecretKeySelector
		field string
	}{{tokenRef(fs), "spec.token.keySecretRef"}, {paymentRef(fs), "spec.payment.secretRef"}} {
		if ref.ref != nil {
			if _, err := get(ref.ref, ref.field); err != nil {
				return e, err
			}
		}
	}
	return e, nil
}

func tokenRef(fs *v1alpha1.FlashSale) *corev1.SecretKeySelector {
	if fs.Spec.Token != nil {
		return fs.Spec.Token.KeySecretRef
	}
	return nil
}

func paymentRef(fs *v1alpha1.FlashSale) *corev1.SecretKeySelector {
	if fs.Spec.Payment != nil {
		return fs.Spec.Payment.SecretRef
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// conns are open connections to one set of endpoints, kept between
// reconciles and shared by every sale that uses the same endpoints: a status
// refresh every few seconds must not dial Redis, MySQL and Kafka anew, a
// hundred sales on one MySQL must not hold a hundred connection pools, and a
// sale deleted together with its namespace (Secrets first) can still be
// cleaned up through the connections the operator already holds.
type conns struct {
	fingerprint string
	// refs counts the sales bound to these connections.
	refs int

	rdb    redis.UniversalClient
	db     *sql.DB
	orders *orderdb.Store
	// kafka and admin are nil without Kafka.
	brokers []string
	kafka   sarama.Client
	admin   sarama.ClusterAdmin
}

func (c *conns) close() {
	if c.admin != nil {
		_ = c.admin.Close() // closes c.kafka too
	} else if c.kafka != nil {
		_ = c.kafka.Close()
	}
	if c.db != nil {
		_ = c.db.Close()
	}
	if c.rdb != nil {
		_ = c.rdb.Close()
	}
}

// binding is which connections a sale uses, and when its Secrets were read.
type binding struct {
	c          *conns
	resolvedAt time.Time
	// generation of the spec the Secrets were read for.
	generation int64
}

// connPool holds the bindings of every sale, by sale key ("namespace/name"),
// and the shared connections, by endpoints fingerprint.
type connPool struct {
	mu    sync.Mutex
	sales map[string]*binding
	byFP  map[string]*conns
}

func (p *connPool) get(saleKey string) *binding {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.sales[saleKey]; b != nil {
		cp := *b
		return &cp
	}
	return nil
}

// shared returns open connections to the endpoints with fingerprint fp.
func (p *connPool) shared(fp string) *conns {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.byFP[fp]
}

// bind points the sale at c (adding c to the pool if new) and releases what
// the sale used before. If another goroutine dialled the same endpoints first,
// its connections win and c is closed; bind returns the ones in use.
func (p *connPool) bind(saleKey string, c *conns, now time.Time, gen int64) *conns {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sales == nil {
		p.sales, p.byFP = map[string]*binding{}, map[string]*conns{}
	}
	if have := p.byFP[c.fingerprint]; have != nil && have != c {
		c.close()
		c = have
	}
	p.byFP[c.fingerprint] = c
	old := p.sales[saleKey]
	if old != nil && old.c == c {
		old.resolvedAt, old.generation = now, gen
		return c
	}
	c.refs++
	p.sales[saleKey] = &binding{c: c, resolvedAt: now, generation: gen}
	if old != nil {
		p.releaseLocked(old.c)
	}
	return c
}

// drop unbinds the sale, closing its connections when no other sale uses them.
func (p *connPool) drop(saleKey string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.sales[saleKey]; b != nil {
		delete(p.sales, saleKey)
		p.releaseLocked(b.c)
	}
}

func (p *connPool) releaseLocked(c *conns) {
	c.refs--
	if c.refs <= 0 {
		delete(p.byFP, c.fingerprint)
		c.close()
	}
}

// closeAll is called when the manager stops.
func (p *connPool) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.byFP {
		c.close()
	}
	p.sales, p.byFP = nil, nil
}

// DependencyError says which dependency failed; the reason goes into the
// Degraded condition and the Event.
type DependencyError struct {
	Reason string
	Err    error
}

func (e *DependencyError) Error() string { return e.Err.Error() }
func (e *DependencyError) Unwrap() error { return e.Err }

// dependencyReason is the reason a failure is reported with: the failing
// dependency's, or ReconcileFailed.
func dependencyReason(err error) string {
	var de *DependencyError
	if errors.As(err, &de) {
		return de.Reason
	}
	return v1alpha1.ReasonReconcileFailed
}

func depErr(reason string, err error) error {
	if err == nil {
		return nil
	}
	var de *DependencyError
	if errors.As(err, &de) {
		return err
	}
	return &DependencyError{Reason: reason, Err: err}
}

// dial opens the connections to e, each verified with a round trip bounded
// by timeout so an unreachable dependency is reported, not waited on.
func dial(ctx context.Context, e Endpoints, timeout time.Duration) (*conns, error) {
	c := &conns{fingerprint: e.fingerprint(), brokers: e.KafkaBrokers}
	if e.RedisCluster {
		c.rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: e.RedisAddrs, Password: e.RedisPassword,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, MaxRetries: 1})
	} else {
		c.rdb = redis.NewClient(&redis.Options{Addr: e.RedisAddrs[0], Password: e.RedisPassword,
			DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout, MaxRetries: 1})
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.rdb.Ping(pctx).Err(); err != nil {
		c.close()
		return nil, depErr(v1alpha1.ReasonRedisUnavailable, fmt.Errorf("connect to redis %s: %w", strings.Join(e.RedisAddrs, ","), err))
	}
	db, err := orderdb.Open(e.MySQLDSN)
	if err != nil {
		c.close()
		return nil, &ConfigError{Reason: v1alpha1.ReasonConfigInvalid, Msg: "spec.mysql.dsnSecretRef: " + err.Error()}
	}
	// The operator's queries are a few per sale and refresh; a small pool
	// shared by every sale on this database is plenty.
	db.SetMaxOpenConns(8)
	db.SetMaxIdleConns(4)
	c.db, c.orders = db, orderdb.New(db)
	if err := db.PingContext(pctx); err != nil {
		c.close()
		return nil, depErr(v1alpha1.ReasonMySQLUnavailable, fmt.Errorf("connect to mysql: %w", err))
	}
	if len(e.KafkaBrokers) > 0 {
		cfg := kafkautil.Options{Brokers: e.KafkaBrokers, ClientID: "flashsale-operator"}.Config()
		cfg.Net.DialTimeout, cfg.Net.ReadTimeout, cfg.Net.WriteTimeout = timeout, timeout, timeout
		cfg.Metadata.Retry.Max = 1
		cfg.Admin.Timeout = timeout
		kc, err := sarama.NewClient(e.KafkaBrokers, cfg)
		if err != nil {
			c.close()
			return nil, depErr(v1alpha1.ReasonKafkaUnavailable, fmt.Errorf("connect to kafka %s: %w", strings.Join(e.KafkaBrokers, ","), err))
		}
		c.kafka = kc
		admin, err := sarama.NewClusterAdminFromClient(kc)
		if err != nil {
			c.close()
			return nil, depErr(v1alpha1.ReasonKafkaUnavailable, fmt.Errorf("kafka cluster admin: %w", err))
		}
		c.admin = admin
	}
	return c, nil
}

// connect returns the sale's connections, re-reading its Secrets at most
// every r.ResolveEvery or when the spec changed, and dialling only endpoints
// no other sale is connected to already.
func (r *FlashSaleReconciler) connect(ctx context.Context, fs *v1alpha1.FlashSale, now time.Time) (*conns, error) {
	saleKey := fs.SaleKey()
	if b := r.pool.get(saleKey); b != nil && now.Sub(b.resolvedAt) < r.ResolveEvery && b.generation == fs.Generation {
		return b.c, nil
	}
	e, err := r.resolveEndpoints(ctx, fs)
	if err != nil {
		return nil, err
	}
	c := r.pool.shared(e.fingerprint())
	if c == nil {
		if c, err = dial(ctx, e, r.DialTimeout); err != nil {
			return nil, err
		}
	}
	return r.pool.bind(saleKey, c, now, fs.Generation), nil
}
