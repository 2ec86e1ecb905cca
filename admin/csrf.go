package admin

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
)

// csrfCookie holds a random per-browser value; the token is
// HMAC(secret, cookie value), so a token is useless without the cookie it
// was minted for, and a cookie is useless without the per-process secret.
const csrfCookie = "orchestratord_admin"

// CSRFHeader is the request header carrying the CSRF token of a POST (the
// form field "csrf" also works).
const CSRFHeader = "X-CSRF-Token"

// csrf mints and checks tokens. secret is random per process, so tokens do
// not survive a restart (the page reloads its token with every render).
type csrf struct {
	secret []byte
	origin *http.CrossOriginProtection // Sec-Fetch-Site / Origin check
}

func (c *csrf) init() error {
	c.secret = make([]byte, 32)
	if _, err := rand.Read(c.secret); err != nil {
		return fmt.Errorf("csrf secret: %w", err)
	}
	c.origin = http.NewCrossOriginProtection()
	return nil
}

func (c *csrf) mac(v string) string {
	m := hmac.New(sha256.New, c.secret)
	m.Write([]byte("csrf\x00"))
	m.Write([]byte(v))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// token returns the CSRF token for this browser, setting the cookie when
// the request has none.
func (c *csrf) token(w http.ResponseWriter, r *http.Request) string {
	if ck, err := r.Cookie(csrfCookie); err == nil && len(ck.Value) >= 20 {
		return c.mac(ck.Value)
	}
	b := make([]byte, 18)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail (Go 1.24+)
	v := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{
		Name:     csrfCookie,
		Value:    v,
		Path:     "/",
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
		Secure:   r.TLS != nil,
	})
	return c.mac(v)
}

// check reports whether r is a same-origin request carrying the token that
// matches its cookie.
func (c *csrf) check(r *http.Request) bool {
	if c.origin.Check(r) != nil {
		return false
	}
	ck, err := r.Cookie(csrfCookie)
	if err != nil || ck.Value == "" {
		return false
	}
	tok := r.Header.Get(CSRFHeader)
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	if tok == "" {
		return false
	}
	return hmac.Equal([]byte(tok), []byte(c.mac(ck.Value)))
}

// post wraps a POST handler with the CSRF check: 403 without a valid token.
func (s *Server) post(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 4096)
		if !s.csrf.check(r) {
			s.log.Warn("admin POST refused: bad or missing CSRF token or cross-origin", "path", r.URL.Path, "remote", r.RemoteAddr)
			writeJSON(w, http.StatusForbidden, errorBody{Error: "csrf",
				Message: "This page's security token has expired (the daemon restarted?): reload the page and try again."})
			return
		}
		h(w, r)
	}
}
