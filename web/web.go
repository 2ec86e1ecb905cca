package web

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var static embed.FS

// client is the JavaScript client library (web/client), served as is.
//
//go:embed client/orchestrator.js client/orchestrator.d.ts client/README.md
var client embed.FS

// ClientPath is where the demo handler serves the client library:
// ClientPath+"orchestrator.js" and ClientPath+"orchestrator.d.ts".
const ClientPath = "/client/"

// RoutesPath is the demo handler's JSON list of the routes in force:
// {"routes":["echo","stream"]}.
const RoutesPath = "/routes.json"

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

// Client returns the client library's files: orchestrator.js,
// orchestrator.d.ts and README.md.
func Client() fs.FS {
	sub, err := fs.Sub(client, "client")
	if err != nil { // cannot happen: the files are embedded
		panic(err)
	}
	return sub
}

// Demo returns a handler serving the demo chat page: / is index.html,
// /chat.js and /chat.css its assets, /client/orchestrator.js and
// /client/orchestrator.d.ts the client library (an ES module a page can
// import without a build step), and /routes.json the names routes() returns
// (the routes in force; nil: none). The admin assets are not served (404),
// nor are directory listings. Mount it at / of the client listener.
func Demo(routes func() []string) http.Handler {
	files := http.FileServerFS(Static())
	lib := http.StripPrefix(strings.TrimSuffix(ClientPath, "/"), http.FileServerFS(Client()))
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
		switch {
		case p == RoutesPath:
			names := []string{}
			if routes != nil {
				names = append(names, routes()...)
			}
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			_ = json.NewEncoder(w).Encode(map[string][]string{"routes": names})
		case strings.HasPrefix(p, ClientPath):
			if strings.HasSuffix(p, ".d.ts") {
				w.Header().Set("Content-Type", "application/typescript; charset=utf-8")
			}
			w.Header().Set("Access-Control-Allow-Origin", "*")
			lib.ServeHTTP(w, r)
		default:
			files.ServeHTTP(w, r)
		}
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
