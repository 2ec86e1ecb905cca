package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/orchestratord/orchestratord/daemon/config"
)

const (
	// maxTokenBytes bounds a token before any parsing: real JWTs are far
	// smaller, and a megabyte of base64 costs a decode.
	maxTokenBytes = 8192
	// maxSubjectBytes bounds the sub claim, which becomes the user id in
	// logs, backend headers and the session store.
	maxSubjectBytes = 256
	// jwksHTTPTimeout bounds one JWKS fetch.
	jwksHTTPTimeout = 10 * time.Second
	// unknownKIDEvery spaces the JWKS refreshes triggered by tokens with an
	// unknown kid, so that a flood of made-up kids costs the IdP one fetch
	// per interval.
	unknownKIDEvery = 10 * time.Second
	// unknownKIDWaitMax is the longest a handshake waits for such a refresh
	// (the wait for the limiter and the fetch itself); a handshake that
	// would wait longer is refused at once.
	unknownKIDWaitMax = 3 * time.Second
	// defaultJWKSRefresh applies when the config gives no interval.
	defaultJWKSRefresh = 5 * time.Minute
)

// Errors of Verify; they are for the log only, never for the client.
var (
	// ErrNoKey: no configured key fits the token's algorithm and kid.
	ErrNoKey = errors.New("no key for this token")
	// ErrNoSubject: the token has no usable sub claim.
	ErrNoSubject = errors.New("token has no valid sub claim")
	// ErrTokenTooLong: the token is longer than any real JWT.
	ErrTokenTooLong = errors.New("token too long")
)

// Identity is who a handshake authenticated as.
type Identity struct {
	// User is the token's sub, or "anonymous".
	User string
	// Expires is when the token stops being accepted: its exp plus the
	// configured leeway, the same tolerance the handshake got (so that a
	// token let in within the leeway is not closed at once). Zero when the
	// token has no exp, and for anonymous.
	Expires time.Time
	// Anonymous is true when no token was given and auth.anonymous let the
	// handshake in.
	Anonymous bool
}

// AnonymousUser is the User of an anonymous Identity.
const AnonymousUser = "anonymous"

// Verifier checks JWTs against the configured algorithms and keys. It is
// immutable after NewVerifier and safe for concurrent use.
type Verifier struct {
	parser *jwt.Parser
	secret []byte          // the HMAC key; nil unless an HS* algorithm is configured
	static []staticKey     // keys_file
	remote keyfunc.Keyfunc // jwks_url; nil when not configured
	leeway time.Duration
	ctx    context.Context
	log    *slog.Logger
}

// NewVerifier builds a Verifier from cfg. HMAC algorithms use cfg.JWT.Secret
// only; public-key algorithms use the keys of cfg.JWT.KeysFile and of
// cfg.JWT.JWKSURL. The JWKS URL is fetched once now (a failure is logged, not
// returned, so that an IdP outage does not stop the daemon) and then every
// cfg.JWT.JWKSRefresh, and also when a token names an unknown kid (at most
// once per 10 s). The background refresh stops when ctx is done.
func NewVerifier(ctx context.Context, cfg config.Auth, log *slog.Logger) (*Verifier, error) {
	j := cfg.JWT
	v := &Verifier{ctx: ctx, log: log, leeway: j.Leeway.D()}
	var hasHS, hasPK bool
	for _, a := range j.Algorithms {
		switch {
		case strings.HasPrefix(a, "HS") && (a == "HS256" || a == "HS384" || a == "HS512"):
			hasHS = true
		case keyFamilyKnown(a):
			hasPK = true
		default:
			return nil, fmt.Errorf("auth.jwt.algorithms: unsupported algorithm %q", a)
		}
	}
	if len(j.Algorithms) == 0 && !cfg.Anonymous {
		return nil, errors.New("auth.jwt.algorithms: none configured")
	}
	if hasHS {
		if j.Secret == "" {
			return nil, fmt.Errorf("auth.jwt.secret_env: HMAC algorithm configured but %q is empty", j.SecretEnv)
		}
		v.secret = []byte(j.Secret)
	}
	if hasPK {
		if j.KeysFile == "" && j.JWKSURL == "" {
			return nil, errors.New("auth.jwt: public-key algorithms need keys_file or jwks_url")
		}
		if j.KeysFile != "" {
			keys, err := loadKeysFile(j.KeysFile, log)
			if err != nil {
				return nil, fmt.Errorf("auth.jwt.keys_file: %w", err)
			}
			v.static = keys
		}
		if j.JWKSURL != "" {
			kf, err := newRemote(ctx, j, log)
			if err != nil {
				return nil, fmt.Errorf("auth.jwt.jwks_url: %w", err)
			}
			v.remote = kf
		}
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(append([]string(nil), j.Algorithms...)),
		jwt.WithLeeway(j.Leeway.D()),
	}
	if j.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(j.Issuer))
	}
	if j.Audience != "" {
		opts = append(opts, jwt.WithAudience(j.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// keyFamilyKnown reports whether alg is a supported public-key algorithm.
func keyFamilyKnown(alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA":
		return true
	}
	return false
}

// newRemote builds the JWKS URL key source.
func newRemote(ctx context.Context, j config.JWT, log *slog.Logger) (keyfunc.Keyfunc, error) {
	every := j.JWKSRefresh.D()
	if every <= 0 {
		every = defaultJWKSRefresh
	}
	return keyfunc.NewDefaultOverrideCtx(ctx, []string{j.JWKSURL}, keyfunc.Override{
		Client:            &http.Client{Timeout: jwksHTTPTimeout},
		HTTPTimeout:       jwksHTTPTimeout,
		RefreshInterval:   every,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(unknownKIDEvery), 1),
		RateLimitWaitMax:  unknownKIDWaitMax,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				log.LogAttrs(ctx, slog.LevelWarn, "JWKS refresh failed", slog.String("url", u), slog.Any("err", err))
			}
		},
	})
}

// Verify checks token and returns the identity it carries: signature with a
// key of the token's algorithm, alg among the configured ones, exp and nbf
// with the configured leeway, iss and aud when configured, and a sub of 1 to
// 256 printable characters. Errors say why, for the log; never send them to
// the client.
func (v *Verifier) Verify(token string) (Identity, error) {
	if len(token) > maxTokenBytes {
		return Identity{}, ErrTokenTooLong
	}
	var claims jwt.RegisteredClaims
	if _, err := v.parser.ParseWithClaims(token, &claims, v.keyFunc); err != nil {
		return Identity{}, fmt.Errorf("verify token: %w", err)
	}
	if !validSubject(claims.Subject) {
		return Identity{}, ErrNoSubject
	}
	id := Identity{User: claims.Subject}
	if claims.ExpiresAt != nil {
		id.Expires = claims.ExpiresAt.Time.Add(v.leeway)
	}
	return id, nil
}

// validSubject reports whether sub is 1 to maxSubjectBytes bytes with no
// control characters (it ends up in headers and logs).
func validSubject(sub string) bool {
	if sub == "" || len(sub) > maxSubjectBytes {
		return false
	}
	for i := 0; i < len(sub); i++ {
		if c := sub[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// keyFunc picks the verification keys of a token. The parser has already
// checked that the token's alg is a configured one. HS* tokens get the
// configured secret and nothing else; every other algorithm gets only public
// keys of its own family (and curve), filtered by kid when both sides name
// one.
func (v *Verifier) keyFunc(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	switch alg {
	case "HS256", "HS384", "HS512":
		if v.secret == nil {
			return nil, ErrNoKey
		}
		return v.secret, nil
	case "none", "":
		return nil, ErrNoKey
	}
	kid, _ := t.Header["kid"].(string)
	var set jwt.VerificationKeySet
	for _, k := range v.static {
		if kid != "" && k.kid != "" && k.kid != kid {
			continue
		}
		if k.alg != "" && k.alg != alg {
			continue
		}
		if keyFits(alg, k.key) {
			set.Keys = append(set.Keys, k.key)
		}
	}
	if v.remote != nil {
		if kid != "" {
			key, err := v.remote.KeyfuncCtx(v.ctx)(t)
			if err != nil && len(set.Keys) == 0 {
				return nil, fmt.Errorf("%w: %w", ErrNoKey, err)
			}
			if err == nil && keyFits(alg, key) {
				set.Keys = append(set.Keys, key)
			}
		} else if all, err := v.remote.VerificationKeySet(v.ctx); err == nil {
			for _, key := range all.Keys {
				if keyFits(alg, key) {
					set.Keys = append(set.Keys, key)
				}
			}
		}
	}
	switch len(set.Keys) {
	case 0:
		return nil, fmt.Errorf("%w (alg %s, kid %q)", ErrNoKey, alg, kid)
	case 1:
		return set.Keys[0], nil
	}
	return set, nil
}

// Reasons of Gate refusals that are not Verify errors; for the log only.
var (
	errNoToken    = errors.New("no token in the Authorization header, query or cookie")
	errNoVerifier = errors.New("a token was given but no algorithm is configured")
	errOrigin     = errors.New("origin not in the allow-list")
)
