package sessions

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orchestratord/orchestratord/daemon/config"
	"github.com/orchestratord/orchestratord/daemon/internal/redistest"
)

// aclRule is the least the daemon needs, as docs/deploy.md gives it (its
// key prefix orch: here a test prefix).
const aclRule = "+@read +@write +@scripting +@pubsub +@connection +@keyspace -@dangerous +cluster|slots +cluster|shards"

// TestRedisACL: the store and the bus work as an ACL user limited to its
// key prefix and channels with the documented command rule, user and
// password taken from sessions.redis_username_env / redis_password_env;
// a wrong password fails at open.
func TestRedisACL(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis server")
	}
	prefix := randomPrefix()
	args := append([]string{"--user", "orch", "on", ">s3cret", "~" + prefix + "*", "resetchannels", "&" + prefix + "*"}, strings.Fields(aclRule)...)
	s := redistest.StartSingleT(t, aclPorts, args...)
	cfg, err := config.Parse([]byte(`auth: {anonymous: true}
sessions:
  store: redis
  redis_url: redis://`+s.Addr+`/0
  redis_username_env: R_USER
  redis_password_env: R_PASS
`), []string{"R_USER=orch", "R_PASS=s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	b := backend{name: "acl", redis: true, url: cfg.Sessions.RedisURL, prefix: prefix}
	lim := testLimits
	lim.RedisUsername, lim.RedisPassword = cfg.Sessions.RedisUsername, cfg.Sessions.RedisPassword
	a := b.openManager(t, "acl-A", lim)
	bb := b.openManager(t, "acl-B", lim)
	oa, ob := &fakeOutlet{}, &fakeOutlet{}
	id, _ := attach(t, a, "alice", "", oa)
	if err := a.AppendHistory(t.Context(), id, nil); err != nil {
		t.Fatal(err)
	}
	if _, resumed := attach(t, bb, "alice", id, ob); !resumed {
		t.Fatal("resume on B not resumed")
	}
	eventually(t, 5*time.Second, "takeover over the bus as the ACL user", oa.wasKicked)

	// The user really is limited: other keys and admin commands are refused.
	c := a.store.(*RedisStore).c
	if err := c.Do(t.Context(), c.B().Get().Key("other:key").Build()).Error(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("GET outside the prefix: %v, want NOPERM", err)
	}
	if err := c.Do(t.Context(), c.B().Flushall().Build()).Error(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Fatalf("FLUSHALL: %v, want NOPERM", err)
	}

	lim.RedisPassword = "wrong"
	if _, err := OpenRedisStore(b.cfg(lim), RedisOptions{Prefix: prefix}, testLog(t)); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("open with a wrong password: %v, want WRONGPASS", err)
	}
}

// TestRedisTLSOptions: sessions.redis_tls loads the CA and the client pair
// into the rediss:// options, and names the file that is wrong.
func TestRedisTLSOptions(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redis"}, NotBefore: time.Now(),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crt, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "c.key")
	os.WriteFile(crt, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)

	cfg := config.Sessions{RedisURL: "rediss://10.0.0.1:6380?addr=10.0.0.2:6380&master_set=m",
		RedisTLS: config.RedisTLS{CAFile: crt, CertFile: crt, KeyFile: kf, ServerName: "redis.internal"}, SentinelPassword: "sp"}
	opt, err := redisClientOption(cfg, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if opt.TLSConfig == nil || opt.TLSConfig.RootCAs == nil || len(opt.TLSConfig.Certificates) != 1 || opt.TLSConfig.ServerName != "redis.internal" ||
		opt.TLSConfig.MinVersion < tls.VersionTLS12 {
		t.Fatalf("tls config %+v", opt.TLSConfig)
	}
	if opt.Sentinel.MasterSet != "m" || opt.Sentinel.TLSConfig == nil || opt.Sentinel.Password != "sp" || len(opt.InitAddress) != 2 {
		t.Fatalf("sentinel options %+v, init %v", opt.Sentinel, opt.InitAddress)
	}
	cfg.RedisTLS.CAFile = kf // a key, not a certificate
	if _, err := redisClientOption(cfg, time.Second); err == nil || !strings.Contains(err.Error(), "ca_file") {
		t.Fatalf("bad CA file: %v", err)
	}
	cfg.RedisTLS.CAFile, cfg.RedisTLS.KeyFile = "", filepath.Join(dir, "missing.key")
	if _, err := redisClientOption(cfg, time.Second); err == nil || !strings.Contains(err.Error(), "key_file") {
		t.Fatalf("missing key file: %v", err)
	}
}
