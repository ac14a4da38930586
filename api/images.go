package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/registryauth"
)

// Image routes beyond list and import: pull (a stream of progress
// events), delete and prune. Credentials passed with a pull live only for
// that request: they are never logged (the request log has no bodies),
// stored, or echoed.

// pullImage answers POST /images/pull with application/x-ndjson: progress
// events as layers arrive, then one done or error event. Bad input is
// still a plain 400 before the stream starts.
func (s *Server) pullImage(w http.ResponseWriter, r *http.Request) {
	var req apitype.PullRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	pr := runtime.PullRequest{Ref: req.Ref, Platform: req.Platform}
	if a := req.Auth; a != nil {
		if a.Password == "" {
			s.fail(w, r, fmt.Errorf("auth.password is empty (an empty username with a password is an identity token): %w", errdefs.ErrInvalidArgument))
			return
		}
		pr.Auth = &registryauth.Credentials{Username: a.Username, Password: a.Password}
	}
	if err := s.mgr.ValidatePull(&pr); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	send := func(ev apitype.PullEvent) {
		// A client that went away cancels the pull through the request's
		// context; a failed write needs no more handling.
		if enc.Encode(ev) == nil && flusher != nil {
			flusher.Flush()
		}
	}
	if flusher != nil {
		flusher.Flush() // the client sees the stream start before the first layer
	}
	pr.Progress = func(p runtime.PullProgress) {
		send(apitype.PullEvent{Type: apitype.PullEventProgress, Layer: p.Layer, Done: ptr(p.Done), Total: ptr(p.Total)})
	}
	info, err := s.mgr.PullImage(r.Context(), pr)
	if err != nil {
		reason := apitype.PullReasonFailed
		var pe *runtime.PullError
		if errors.As(err, &pe) {
			reason = string(pe.Reason)
		}
		s.log.Warn("image pull failed", "request_id", requestID(r), "image", pr.Ref, "reason", reason, "error", err)
		send(apitype.PullEvent{Type: apitype.PullEventError, Detail: err.Error(), Reason: reason})
		return
	}
	s.log.Info("image pulled", "request_id", requestID(r), "image", info.Name, "digest", info.Digest)
	send(apitype.PullEvent{Type: apitype.PullEventDone, Image: info.Name, Digest: info.Digest})
}

func ptr[T any](v T) *T { return &v }

func requestID(r *http.Request) string {
	rid, _ := r.Context().Value(keyRequestID).(string)
	return rid
}

// deleteImage answers DELETE /images/{name...}: the name may hold "/" and
// ":" raw or escaped.
func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request) {
	name, err := s.mgr.DeleteImage(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.ImageDeleteResponse{Deleted: []string{name}})
}

// pruneImages answers POST /images/prune.
func (s *Server) pruneImages(w http.ResponseWriter, r *http.Request) {
	var req struct{}
	if err := s.decode(w, r, &req, true); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.mgr.PruneImages(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := apitype.ImagePruneResponse{Deleted: res.Deleted, Kept: []apitype.KeptImage{}}
	for _, k := range res.Kept {
		out.Kept = append(out.Kept, apitype.KeptImage{Image: k.Name, Reason: k.Reason})
	}
	writeJSON(w, http.StatusOK, out)
}
