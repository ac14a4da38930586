package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/errclass"
)

// PullError is a pull that failed at the registry or in the daemon after
// its stream started (an error event). Reason is one of the
// apitype.PullReason* values. It unwraps to errdefs NotFound for not_found
// and platform, and to errclass.ErrUpstream otherwise (what a 502 is on a
// plain route): never to Unauthenticated, even when the registry refused
// the credentials (that is not this API's 401).
type PullError struct {
	Detail, Reason string
}

func (e *PullError) Error() string { return e.Detail }

func (e *PullError) Unwrap() error {
	if e.Reason == apitype.PullReasonNotFound || e.Reason == apitype.PullReasonPlatform {
		return errdefs.ErrNotFound
	}
	return errclass.ErrUpstream
}

// maxPullEventLine bounds one line of the pull stream.
const maxPullEventLine = 1 << 20

// PullImage calls POST /images/pull and reads its stream, calling progress
// (when not nil) for every progress event. It returns the done event, or a
// *PullError for an error event. It is never retried: a pull in flight may
// have been half done.
func (c *Client) PullImage(ctx context.Context, req apitype.PullRequest, progress func(apitype.PullEvent)) (*apitype.PullEvent, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", errdefs.ErrInvalidArgument)
	}
	hr, err := c.newRequest(ctx, http.MethodPost, c.base+"/images/pull", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, fmt.Errorf("matrxd POST /images/pull: %v: %w", err, errdefs.ErrUnavailable)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.decode(resp, http.StatusOK, nil)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), maxPullEventLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev apitype.PullEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("pull stream: malformed event: %v: %w", err, errdefs.ErrUnknown)
		}
		switch ev.Type {
		case apitype.PullEventProgress:
			if progress != nil {
				progress(ev)
			}
		case apitype.PullEventDone:
			return &ev, nil
		case apitype.PullEventError:
			return nil, &PullError{Detail: ev.Detail, Reason: ev.Reason}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("pull stream: %v: %w", err, errdefs.ErrUnavailable)
	}
	return nil, fmt.Errorf("pull stream ended without a done or error event (did matrxd stop?): %w", errdefs.ErrUnavailable)
}

// imagePath is /images/NAME with the name as one escaped path segment.
func imagePath(name string) string { return "/images/" + url.PathEscape(name) }

// DeleteImage calls DELETE /images/{name}.
func (c *Client) DeleteImage(ctx context.Context, name string) (*apitype.ImageDeleteResponse, error) {
	var r apitype.ImageDeleteResponse
	return &r, c.do(ctx, http.MethodDelete, imagePath(name), nil, nil, http.StatusOK, &r)
}

// PruneImages calls POST /images/prune.
func (c *Client) PruneImages(ctx context.Context) (*apitype.ImagePruneResponse, error) {
	var r apitype.ImagePruneResponse
	return &r, c.do(ctx, http.MethodPost, "/images/prune", nil, nil, http.StatusOK, &r)
}
