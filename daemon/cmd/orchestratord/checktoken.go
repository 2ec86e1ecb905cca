package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sort"
	"strings"
	"time"

	"github.com/orchestratord/orchestratord/daemon/auth"
	"github.com/orchestratord/orchestratord/daemon/config"
)

// newGate builds the handshake's Gatekeeper from cfg: serve and
// check-token both use it, so that check-token decides as a handshake
// would. Anonymous demos without any key source run without a verifier;
// a token then cannot be checked and is refused (401).
func newGate(ctx context.Context, cfg config.Config, log *slog.Logger) (*auth.Gate, error) {
	var verifier *auth.Verifier
	if j := cfg.Auth.JWT; !cfg.Auth.Anonymous || j.Secret != "" || j.KeysFile != "" || j.JWKSURL != "" {
		v, err := auth.NewVerifier(ctx, cfg.Auth, log)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		verifier = v
	}
	return auth.NewGate(cfg, verifier, log), nil
}

// errRefused is check-token's error for a token a handshake would refuse.
var errRefused = errors.New("refused")

// checkToken verifies tok with the handshake's own Gate and prints the
// decision: "accepted" with the identity and claims, or "refused" with the
// reason (the one the daemon logs; clients only ever see 401
// {"error":"unauthorized"}). The claims are printed in both cases, decoded
// without verification, to help find what is wrong.
func checkToken(ctx context.Context, cfg config.Config, tok string, stdout, stderr io.Writer) error {
	// A JWKS URL is fetched now; its failures are logged to stderr.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gate, err := newGate(ctx, cfg, log)
	if err != nil {
		return err
	}
	tok = strings.TrimSpace(tok)
	if b, ok := strings.CutPrefix(tok, "Bearer "); ok {
		tok = strings.TrimSpace(b)
	}
	id, verr := gate.VerifyToken(tok)
	if verr != nil {
		fmt.Fprintf(stdout, "refused: %v\n", verr)
		fmt.Fprintf(stdout, "a handshake with this token gets 401 {\"error\":%q}\n", auth.CodeUnauthorized)
	} else {
		fmt.Fprintf(stdout, "accepted: user %q\n", id.User)
		if id.Expires.IsZero() {
			fmt.Fprintln(stdout, "expires: never (no exp claim)")
		} else {
			fmt.Fprintf(stdout, "accepted until: %s (exp + auth.jwt.leeway %s; in %s)\n",
				id.Expires.UTC().Format(time.RFC3339), cfg.Auth.JWT.Leeway, time.Until(id.Expires).Round(time.Second))
		}
	}
	label := "claims"
	if verr != nil {
		label = "claims (unverified)"
	}
	if err := printJWT(stdout, tok, label); err != nil {
		fmt.Fprintf(stdout, "%s: cannot be decoded: %v\n", label, err)
	}
	if verr != nil {
		return fmt.Errorf("%w: %w", errRefused, verr)
	}
	return nil
}

// printJWT prints the header and the claims of a compact JWT, numeric
// dates (exp, nbf, iat) also as UTC times. It does not verify anything.
func printJWT(w io.Writer, tok, label string) error {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return fmt.Errorf("a JWT has 3 dot-separated parts, this has %d", len(parts))
	}
	header, err := decodeSegment(parts[0])
	if err != nil {
		return fmt.Errorf("header: %w", err)
	}
	claims, err := decodeSegment(parts[1])
	if err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	fmt.Fprintf(w, "header: %s\n%s:\n", compact(header), label)
	keys := make([]string, 0, len(claims))
	for k := range claims {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := claims[k]
		fmt.Fprintf(w, "  %s: %s", k, compact(v))
		if n, ok := v.(json.Number); ok && (k == "exp" || k == "nbf" || k == "iat") {
			if f, err := n.Float64(); err == nil && !math.IsInf(f, 0) && math.Abs(f) < 1e12 {
				fmt.Fprintf(w, " (%s)", time.Unix(int64(f), 0).UTC().Format(time.RFC3339))
			}
		}
		fmt.Fprintln(w)
	}
	return nil
}

func decodeSegment(s string) (map[string]any, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("not base64url: %w", err)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	return m, nil
}

func compact(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
