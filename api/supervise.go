package api

// Routes of supervision: lifetime changes, the lifecycle event stream and
// the registry's quarantine (an admin route).

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/sandbox"
)

// touching wraps a route about one sandbox: every such call is activity
// that keeps the sandbox from idling out (sandbox.Manager.Touch).
func (s *Server) touching(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mgr.Touch(r.Context(), r.PathValue("id"))
		h(w, r)
	})
}

// rootOnly serves h only to callers with peer uid 0 on the Unix socket:
// never over TCP (no peer credentials there), whatever the API key.
func (s *Server) rootOnly(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, _ := r.Context().Value(keyPeer).(Peer)
		if !peer.Known || peer.UID != 0 {
			s.fail(w, r, fmt.Errorf("admin routes answer only root on the daemon's Unix socket: %w", errdefs.ErrPermissionDenied))
			return
		}
		h(w, r)
	})
}

func (s *Server) updateSandbox(w http.ResponseWriter, r *http.Request) {
	id, ok := s.sandboxID(w, r)
	if !ok {
		return
	}
	var req apitype.UpdateSandboxRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.TTLSeconds == nil {
		s.fail(w, r, fmt.Errorf("ttl_seconds is required (the only field that can change): %w", errdefs.ErrInvalidArgument))
		return
	}
	n := *req.TTLSeconds
	if n < 1 || n > int64(s.mgr.Limits().MaxTTL/time.Second) {
		s.fail(w, r, fmt.Errorf("ttl_seconds %d is out of range [1, %d]: %w", n, int64(s.mgr.Limits().MaxTTL/time.Second), errdefs.ErrInvalidArgument))
		return
	}
	rec, err := s.mgr.SetTTL(r.Context(), id, time.Duration(n)*time.Second)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.sandboxJSON(rec))
}

// parseSince reads ?since=: an RFC 3339 time, Unix seconds (fractions
// allowed), or a Go duration meaning that long ago ("10m").
func parseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 {
		sec := int64(f)
		return time.Unix(sec, int64((f-float64(sec))*1e9)), nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("query parameter since=%q: want an RFC 3339 time, Unix seconds, or a duration such as 10m: %w", v, errdefs.ErrInvalidArgument)
}

// streamEvents streams lifecycle events as NDJSON, one event per line,
// until the client goes away: the kept events since ?since= first (the
// daemon keeps the last 4096, in memory), then new ones as they happen.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := knownParams(q, "since"); err != nil {
		s.fail(w, r, err)
		return
	}
	since, err := parseSince(q.Get("since"), time.Now())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	backlog, events, cancel := s.mgr.Events(since)
	defer cancel()
	// A daemon shutdown ends the stream (CloseStreams), or it would hold
	// the graceful drain; clients reconnect with since.
	ctx, done := s.streamContext(r)
	defer done()
	// A long-lived response: no write deadline, and a read deadline set
	// for the request headers must not cut it.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(e sandbox.Event) bool {
		if err := enc.Encode(eventJSON(e)); err != nil {
			return false
		}
		return true
	}
	for _, e := range backlog {
		if !send(e) {
			return
		}
	}
	rc.Flush()
	// A comment-free keepalive: an empty line every 30 s would break
	// NDJSON readers, so idle streams simply stay open.
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return // fell too far behind: the client reconnects with since
			}
			if !send(e) {
				return
			}
			rc.Flush()
		}
	}
}

func eventJSON(e sandbox.Event) apitype.Event {
	return apitype.Event{Seq: e.Seq, Time: e.Time, Type: e.Type, SandboxID: e.SandboxID, UserID: e.UserID.String(),
		Status: e.Status, Reason: e.Reason, ExitCode: e.ExitCode, Repair: e.Repair, Detail: e.Detail}
}

func (s *Server) quarantine(w http.ResponseWriter, r *http.Request) {
	qs, err := s.mgr.Quarantined(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := apitype.QuarantineList{Records: []apitype.QuarantinedRecord{}}
	for _, q := range qs {
		out.Records = append(out.Records, apitype.QuarantinedRecord{SandboxID: q.ID, Raw: base64.StdEncoding.EncodeToString(q.Raw),
			Error: q.Error, QuarantinedAt: q.QuarantinedAt})
	}
	writeJSON(w, http.StatusOK, out)
}
