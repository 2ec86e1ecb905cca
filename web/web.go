package web

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// Static returns the whole static tree: index.html, chat.js, chat.css and
// admin/ (admin.css, admin.js).
func Static() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil { // cannot happen: the directory is embedded
		panic(err)
	}
	return sub
}

// Admin returns the admin page's assets (admin.css, admin.js).
func Admin() fs.FS {
	sub, err := fs.Sub(Static(), "admin")
	if err != nil {
		panic(err)
	}
	return sub
}

// Demo returns a handler serving the demo chat page: / is index.html, and
// /chat.js, /chat.css its assets. The admin assets are not served (404), nor
// are directory listings. Mount it at / of the client listener.
func Demo() http.Handler {
	files := http.FileServerFS(Static())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := r.URL.Path
		if p != "/" && (strings.HasPrefix(p, "/admin") || strings.HasSuffix(p, "/") || strings.Contains(p, "..")) {
			http.NotFound(w, r)
			return
		}
		SecurityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// SecurityHeaders sets the headers every page of ours carries: a strict
// content security policy (same-origin scripts, styles and WebSockets, no
// framing), nosniff and no referrer.
func SecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
}
