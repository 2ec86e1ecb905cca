package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/golang-jwt/jwt/v5"

	"github.com/orchestratord/orchestratord/daemon/config"
)

// runCLI runs the command line args with env (no other environment) and
// stdin, and returns its exit code and output.
func runCLI(t *testing.T, env []string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{env: env, stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}
	code = c.main(args)
	return code, out.String(), errb.String()
}

// flagsIn returns the flag names a --help output lists.
func flagsIn(help string) []string {
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(help, -1) {
		names = append(names, m[1])
	}
	return names
}

func TestHelpListsSubcommands(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}, {"-help"}} {
		code, out, errOut := runCLI(t, nil, "", args...)
		if code != 0 || errOut != "" {
			t.Fatalf("%v: exit %d, stderr %q; want 0 and nothing", args, code, errOut)
		}
		for _, c := range []string{"serve", "check-config", "token", "check-token", "default-config", "version", "--version"} {
			if !strings.Contains(out, "  "+c) {
				t.Errorf("%v does not list %s:\n%s", args, c, out)
			}
		}
		if strings.Contains(out, "-listen") || strings.Contains(out, "-log-level") {
			t.Errorf("%v shows serve's flags:\n%s", args, out)
		}
	}
}

// TestSubcommandHelpListsOwnFlags: each subcommand's --help (and "help
// <command>") lists exactly its own flags, on stdout, exit 0.
func TestSubcommandHelpListsOwnFlags(t *testing.T) {
	tests := []struct {
		cmd   string
		flags []string
	}{
		{"serve", []string{"admin", "config", "listen", "log-level"}},
		{"check-config", []string{"config"}},
		{"token", []string{"config", "sub", "ttl"}},
		{"check-token", []string{"config"}},
		{"default-config", nil},
		{"version", nil},
	}
	for _, tc := range tests {
		t.Run(tc.cmd, func(t *testing.T) {
			for _, args := range [][]string{{tc.cmd, "--help"}, {tc.cmd, "-h"}, {"help", tc.cmd}} {
				code, out, errOut := runCLI(t, nil, "", args...)
				if code != 0 || errOut != "" {
					t.Fatalf("%v: exit %d, stderr %q; want 0 and nothing", args, code, errOut)
				}
				if !strings.HasPrefix(out, "usage: orchestratord "+tc.cmd) {
					t.Errorf("%v: output does not start with its usage line:\n%s", args, out)
				}
				if got := strings.Join(flagsIn(out), ","); got != strings.Join(tc.flags, ",") {
					t.Errorf("%v lists flags [%s], want [%s]:\n%s", args, got, strings.Join(tc.flags, ","), out)
				}
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		code, out, _ := runCLI(t, nil, "", args...)
		if code != 0 || out != "orchestratord "+version+"\n" {
			t.Errorf("%v: exit %d, output %q; want 0 and %q", args, code, out, "orchestratord "+version+"\n")
		}
	}
}

// TestExitCodes: usage errors exit 2 with the command's usage line on
// stderr; runtime errors exit 1.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, config.StarterYAML(), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("ws:\n  heartbeat: 25\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := []string{"ORCH_JWT_SECRET=" + testSecret}
	tests := []struct {
		name string
		env  []string
		args []string
		code int
		err  string // in stderr
	}{
		{"unknown command", nil, []string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{"unknown flag", nil, []string{"serve", "--bogus"}, 2, "flag provided but not defined: -bogus"},
		{"unknown top-level flag", nil, []string{"--bogus"}, 2, "flag provided but not defined"},
		{"serve flag on check-config", nil, []string{"check-config", "--listen", ":1"}, 2, "not defined: -listen"},
		{"serve extra argument", nil, []string{"serve", "extra"}, 2, `unexpected argument "extra"`},
		{"bad flag value", nil, []string{"token", "--sub", "a", "--ttl", "soon"}, 2, `invalid value "soon" for flag -ttl`},
		{"token without --sub", secret, []string{"token", "--config", good}, 2, "--sub is required"},
		{"token negative ttl", secret, []string{"token", "--config", good, "--sub", "a", "--ttl", "-5m"}, 2, "--ttl must be positive"},
		{"token zero ttl", secret, []string{"token", "--config", good, "--sub", "a", "--ttl", "0s"}, 2, "--ttl must be positive"},
		{"check-token without token", secret, []string{"check-token", "--config", good}, 2, "a TOKEN argument is required"},
		{"check-token two tokens", secret, []string{"check-token", "--config", good, "a", "b"}, 2, "one TOKEN expected"},
		{"version with an argument", nil, []string{"version", "x"}, 2, `unexpected argument "x"`},
		{"--version with an argument", nil, []string{"--version", "x"}, 2, `unexpected argument "x"`},
		{"default-config with an argument", nil, []string{"default-config", "x"}, 2, `unexpected argument "x"`},
		{"help for an unknown command", nil, []string{"help", "nope"}, 2, `unknown command "nope"`},
		{"missing config file", nil, []string{"check-config", "--config", filepath.Join(dir, "none.yaml")}, 1, "read config"},
		{"invalid config", nil, []string{"check-config", "--config", bad}, 1, "ws.heartbeat: line 2"},
		{"token without the key", nil, []string{"token", "--config", good, "--sub", "a"}, 1, "ORCH_JWT_SECRET"},
		{"refused token", secret, []string{"check-token", "--config", good, "not.a.jwt"}, 1, "refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tc.env, "", tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tc.code, errOut)
			}
			if !strings.Contains(errOut, tc.err) {
				t.Errorf("stderr does not contain %q:\n%s", tc.err, errOut)
			}
			if tc.code == 2 && !strings.Contains(errOut, "usage: orchestratord") {
				t.Errorf("a usage error without the usage line:\n%s", errOut)
			}
		})
	}
}

// TestTokenHasExp: a minted token carries exp = now + ttl, and
// check-token accepts it.
func TestTokenHasExp(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(cfgPath, config.StarterYAML(), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"ORCH_JWT_SECRET=" + testSecret}
	code, out, errOut := runCLI(t, env, "", "token", "--config", cfgPath, "--sub", "alice", "--ttl", "5m")
	if code != 0 {
		t.Fatalf("token: exit %d: %s", code, errOut)
	}
	tok := strings.TrimSpace(out)
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.ExpiresAt == nil {
		t.Fatal("token has no exp")
	}
	if d := time.Until(claims.ExpiresAt.Time); d < 4*time.Minute || d > 5*time.Minute+time.Second {
		t.Errorf("exp in %s, want about 5m", d)
	}
	code, out, errOut = runCLI(t, env, tok+"\n", "check-token", "--config", cfgPath, "-")
	if code != 0 || !strings.Contains(out, `accepted: user "alice"`) || !strings.Contains(out, "sub: \"alice\"") {
		t.Errorf("check-token of a fresh token: exit %d\n%s%s", code, out, errOut)
	}
}

// TestDefaultConfig: the starter file is accepted by check-config (with
// the HS256 key set), and every value it writes is the real default: the
// file documents the defaults, it does not change them.
func TestDefaultConfig(t *testing.T) {
	code, out, errOut := runCLI(t, nil, "", "default-config")
	if code != 0 || errOut != "" {
		t.Fatalf("default-config: exit %d, stderr %q", code, errOut)
	}
	if !strings.HasPrefix(out, "# ") {
		t.Errorf("the starter file does not start with a comment:\n%.200s", out)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"ORCH_JWT_SECRET=" + testSecret}
	if code, _, errOut := runCLI(t, env, "", "check-config", "--config", path); code != 0 {
		t.Fatalf("check-config rejects the starter file (exit %d):\n%s", code, errOut)
	}
	// Without the key, the error names it.
	if code, _, errOut := runCLI(t, nil, "", "check-config", "--config", path); code != 1 || !strings.Contains(errOut, "ORCH_JWT_SECRET") {
		t.Errorf("check-config without the key: exit %d, %q; want 1 naming ORCH_JWT_SECRET", code, errOut)
	}

	got, err := config.Parse([]byte(out), env)
	if err != nil {
		t.Fatal(err)
	}
	want, err := config.Parse(nil, env)
	if err != nil {
		t.Fatal(err)
	}
	var changed []string
	for _, c := range diffConfig(want, got) {
		if !strings.HasPrefix(c.Path, "backends.") && !strings.HasPrefix(c.Path, "routes.") {
			changed = append(changed, fmt.Sprintf("%s: %s -> %s", c.Path, c.Old, c.New))
		}
	}
	if len(changed) > 0 {
		t.Errorf("the starter file sets values other than the defaults:\n%s", strings.Join(changed, "\n"))
	}
	if got.Routes["echo"].Backend != "echo" {
		t.Errorf("the starter file has no echo route: %+v", got.Routes)
	}
}

// TestCheckTokenDecidesAsTheHandshake: for each token, check-token's
// verdict (exit 0 or 1) is the handshake's (101 or 401) on a daemon
// running the same config.
func TestCheckTokenDecidesAsTheHandshake(t *testing.T) {
	yaml := strings.Replace(baseYAML, "auth:\n  jwt:\n    leeway: 0s\n", "auth:\n  jwt:\n    issuer: https://idp.example\n    leeway: 5s\n", 1)
	s := startStack(t, yaml)
	cfgPath := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	sign := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	now := time.Now()
	key := []byte(testSecret)
	iss := "https://idp.example"
	tests := []struct {
		name   string
		tok    string
		accept bool
		reason string // in check-token's output when refused
	}{
		{"valid", sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "alice", "iss": iss, "exp": now.Add(time.Hour).Unix()}), true, ""},
		{"expired within the leeway", sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "alice", "iss": iss, "exp": now.Add(-2 * time.Second).Unix()}), true, ""},
		{"expired", sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "alice", "iss": iss, "exp": now.Add(-time.Minute).Unix()}), false, "token is expired"},
		{"not yet valid", sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "alice", "iss": iss, "nbf": now.Add(time.Minute).Unix()}), false, "token is not valid yet"},
		{"wrong issuer", sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"sub": "alice", "iss": "https://evil.example"}), false, "invalid issuer"},
		{"wrong key", sign(jwt.SigningMethodHS256, []byte(testSecret+"x"), jwt.MapClaims{"sub": "alice", "iss": iss}), false, "signature is invalid"},
		{"algorithm not configured", sign(jwt.SigningMethodHS512, key, jwt.MapClaims{"sub": "alice", "iss": iss}), false, "signing method HS512 is invalid"},
		{"alg none", sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "iss": iss}), false, "signing method none is invalid"},
		{"no subject", sign(jwt.SigningMethodHS256, key, jwt.MapClaims{"iss": iss}), false, "no valid sub"},
		{"garbage", "not.a.jwt", false, "token is malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status := handshakeStatus(t, s.addr, tc.tok)
			code, out, errOut := runCLI(t, []string{"ORCH_JWT_SECRET=" + testSecret}, "", "check-token", "--config", cfgPath, tc.tok)
			if tc.accept {
				if status != 101 || code != 0 {
					t.Fatalf("handshake %d, check-token exit %d; want 101 and 0\n%s%s", status, code, out, errOut)
				}
				return
			}
			if status != 401 || code != 1 {
				t.Fatalf("handshake %d, check-token exit %d; want 401 and 1\n%s%s", status, code, out, errOut)
			}
			if !strings.Contains(out, "refused: ") || !strings.Contains(out, tc.reason) {
				t.Errorf("check-token output does not give the reason %q:\n%s", tc.reason, out)
			}
		})
	}
}

// handshakeStatus upgrades to /ws with the token and returns the status.
func handshakeStatus(t *testing.T, addr, tok string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer %s\r\n\r\n", addr, tok)
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("read status: %v", err)
	}
	var status int
	if _, err := fmt.Sscanf(line, "HTTP/1.1 %d", &status); err != nil {
		t.Fatalf("status line %q: %v", line, err)
	}
	return status
}

// TestDefaultConfigHasEveryKey: the starter file shows every key of the
// config (but node, whose default is the host name, and the entries of
// backends and routes), so a key added later must be added there too.
func TestDefaultConfigHasEveryKey(t *testing.T) {
	var tree map[string]any
	if err := yaml.Unmarshal(config.StarterYAML(), &tree); err != nil {
		t.Fatal(err)
	}
	has := func(path string) bool {
		var v any = tree
		for _, k := range strings.Split(path, ".") {
			m, ok := v.(map[string]any)
			if !ok {
				return false
			}
			if v, ok = m[k]; !ok {
				return false
			}
		}
		return true
	}
	leaves(reflect.TypeOf(config.Config{}), "", func(path string, _ []int) {
		if path == "node" {
			return
		}
		if !has(path) {
			t.Errorf("the starter file (daemon/config/starter.yaml) has no %s", path)
		}
	})
}
