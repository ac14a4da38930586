package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
)

func (s *Server) storageStats(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user_id")
	st, err := s.mgr.StorageStats(r.Context(), user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.StorageStats{
		UserID: user,
		Hot:    apitype.TierUsage{Objects: st.Hot.Objects, Bytes: st.Hot.Bytes},
		Cold:   apitype.TierUsage{Objects: st.Cold.Objects, Bytes: st.Cold.Bytes},
	})
}

// storageClean is the explicit admin cleanup of one tier. It needs
// ?confirm=true so that no client deletes a user's files by accident.
func (s *Server) storageClean(w http.ResponseWriter, r *http.Request) {
	user, tier := r.PathValue("user_id"), r.PathValue("tier")
	if r.URL.Query().Get("confirm") != "true" {
		s.fail(w, r, fmt.Errorf("deleting a user's %s storage needs ?confirm=true: %w", tier, errdefs.ErrInvalidArgument))
		return
	}
	n, err := s.mgr.CleanStorage(r.Context(), user, tier)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.StorageCleanResponse{UserID: user, Tier: tier, Deleted: n})
}

// storageRestore brings a user's trashed hot file or directory back
// (refused while the user has a live sandbox).
func (s *Server) storageRestore(w http.ResponseWriter, r *http.Request) {
	user := r.PathValue("user_id")
	var req apitype.StorageRestoreRequest
	if err := s.decode(w, r, &req, false); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Path == "" {
		s.fail(w, r, fmt.Errorf("path is required (a file or directory relative to the home): %w", errdefs.ErrInvalidArgument))
		return
	}
	var at time.Time
	if req.At != nil {
		at = *req.At
	}
	restored, err := s.mgr.RestoreStorage(r.Context(), user, req.Path, at)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, apitype.StorageRestoreResponse{UserID: user, Path: req.Path, Restored: restored})
}
