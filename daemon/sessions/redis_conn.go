package sessions

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/rueidis"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// sentinelRefresh is how often a Sentinel client re-reads the master from
// the Sentinels, besides reacting to their +switch-master events (which a
// client connected to a Sentinel that died misses).
const sentinelRefresh = 2 * time.Second

// redisClientOption turns config.Sessions into rueidis options: the URL
// (one server; a Cluster's seeds as repeated addr=; Sentinels with
// master_set=), ACL user and password from the environment (they override
// the URL's), TLS material for rediss://, and short timeouts. Client-side
// caching is off: the store reads fresh state only.
func redisClientOption(cfg config.Sessions, opTimeout time.Duration) (rueidis.ClientOption, error) {
	opt, err := rueidis.ParseURL(cfg.RedisURL)
	if err != nil {
		return opt, fmt.Errorf("parse sessions.redis_url: %w", err)
	}
	if cfg.RedisUsername != "" {
		opt.Username = cfg.RedisUsername
	}
	if cfg.RedisPassword != "" {
		opt.Password = cfg.RedisPassword
	}
	if opt.TLSConfig != nil {
		if err := applyRedisTLS(opt.TLSConfig, cfg.RedisTLS); err != nil {
			return opt, err
		}
	}
	opt.DisableCache = true
	opt.Dialer.Timeout = opTimeout
	opt.ConnWriteTimeout = opTimeout
	if opt.Sentinel.MasterSet != "" {
		// The Sentinels are reached like the servers (TLS alike), with
		// their own credentials.
		opt.Sentinel.Dialer = opt.Dialer
		if opt.TLSConfig != nil {
			opt.Sentinel.TLSConfig = opt.TLSConfig.Clone()
		}
		opt.Sentinel.Username = cfg.SentinelUsername
		opt.Sentinel.Password = cfg.SentinelPassword
		opt.Sentinel.TopologyRefreshInterval = sentinelRefresh
	}
	return opt, nil
}

// applyRedisTLS adds sessions.redis_tls to a rediss:// TLS config.
func applyRedisTLS(tc *tls.Config, t config.RedisTLS) error {
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return fmt.Errorf("sessions.redis_tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("sessions.redis_tls.ca_file %s: %w", t.CAFile, errors.New("no PEM certificate in it"))
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return fmt.Errorf("sessions.redis_tls cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if t.ServerName != "" {
		tc.ServerName = t.ServerName
	}
	return nil
}

// newRedisClient dials the configured Redis. noRetry makes calls return on
// a broken connection instead of retrying (the bus's subscription loop
// reconnects itself, so that it knows when it is not subscribed).
func newRedisClient(cfg config.Sessions, opTimeout time.Duration, noRetry bool) (rueidis.Client, error) {
	opt, err := redisClientOption(cfg, opTimeout)
	if err != nil {
		return nil, err
	}
	opt.DisableRetry = noRetry
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("connect to redis: %w", err)
	}
	return c, nil
}
