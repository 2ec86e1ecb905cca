// Command json-backend is the HTTP backend of the forwarding benchmarks: it
// answers every POST of the http kind with {"data": <the request's data>}
// as application/json, so that the load tool's echo checks hold through
// orchestratord's http route.
package main

import (
	"encoding/json"
	"flag"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:7001", "listen address")
	flag.Parse()
	http.HandleFunc("POST /", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, `{"error":{"message":"bad body"}}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Data json.RawMessage `json:"data"`
		}{body.Data})
	})
	srv := &http.Server{Addr: *addr}
	log.Fatal(srv.ListenAndServe())
}
