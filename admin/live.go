package admin

import (
	"bytes"
	"net/http"
	"time"
)

// events streams updates as server-sent events: one "update" event at once
// and then every interval, for the page's current search (?q=&offset=).
// An update identical to the previous one is not sent again: a "ping"
// event goes instead, so that the page notices a daemon gone silent. The stream
// ends when the client goes away or Shutdown is called.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q, offset, _, err := sessionsQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: err.Error()})
		return
	}
	if s.streams.Add(1) > maxStreams {
		s.streams.Add(-1)
		writeJSON(w, http.StatusServiceUnavailable, errorBody{Error: "too many live views"})
		return
	}
	defer s.streams.Add(-1)

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	t := time.NewTicker(s.interval)
	defer t.Stop()
	var buf, frag bytes.Buffer
	var last []byte
	// retry tells EventSource how soon to reconnect after a drop.
	buf.WriteString("retry: 2000\n\n")
	for {
		data, err := s.renderUpdate(r, q, offset, &frag)
		if err != nil {
			s.log.Warn("render admin update", "err", err)
			return
		}
		if !bytes.Equal(data, last) {
			last = data
			buf.WriteString("event: update\ndata: ")
			buf.Write(data) // JSON: no newlines
			buf.WriteString("\n\n")
		} else {
			// A ping (not a comment, which scripts cannot see) tells the
			// page the daemon is still there when nothing changed.
			buf.WriteString("event: ping\ndata: {}\n\n")
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := w.Write(buf.Bytes()); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		buf.Reset()
		select {
		case <-r.Context().Done():
			return
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}
