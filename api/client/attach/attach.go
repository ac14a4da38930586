// Package attach is the WebSocket half of the matrxd client: attaching to
// a background process (GET /sandboxes/{id}/processes/{proc}/attach), with
// binary frames for the terminal's bytes and text frames for control. It
// is its own package so that api/client links only the standard library,
// api/apitype and errdefs; this one adds github.com/coder/websocket
// (maintained, context-aware, standard library only).
package attach

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/coder/websocket"
	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
)

// Attachment is a WebSocket attached to a process.
type Attachment struct {
	conn *websocket.Conn
}

// Attach opens GET /sandboxes/{id}/processes/{proc}/attach through c.
// offset < 0 means "from now".
func Attach(ctx context.Context, c *client.Client, id, proc string, offset int64) (*Attachment, error) {
	d := c.AttachDialer(id, proc, offset)
	conn, resp, err := websocket.Dial(ctx, d.URL, &websocket.DialOptions{HTTPClient: d.HTTP, HTTPHeader: d.Header})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, client.ErrorFromResponse(resp)
		}
		return nil, fmt.Errorf("attach: %v: %w", err, errdefs.ErrUnavailable)
	}
	conn.SetReadLimit(1 << 20)
	return &Attachment{conn: conn}, nil
}

// Send writes input (a binary frame).
func (a *Attachment) Send(ctx context.Context, b []byte) error {
	return a.conn.Write(ctx, websocket.MessageBinary, b)
}

// Resize asks for a new terminal size (a text control frame).
func (a *Attachment) Resize(ctx context.Context, rows, cols int) error {
	b, _ := json.Marshal(apitype.OutputEvent{Type: apitype.EventResize, Rows: rows, Cols: cols})
	return a.conn.Write(ctx, websocket.MessageText, b)
}

// Recv returns the next output bytes, or the end event (ended true) once
// the process ended. io.EOF: the connection closed without an end.
func (a *Attachment) Recv(ctx context.Context) (out []byte, end *apitype.OutputEvent, err error) {
	for {
		typ, b, err := a.conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != -1 {
				return nil, nil, io.EOF
			}
			return nil, nil, err
		}
		if typ == websocket.MessageBinary {
			return b, nil, nil
		}
		var ev apitype.OutputEvent
		if json.Unmarshal(b, &ev) == nil && ev.Type == apitype.EventEnd {
			return nil, &ev, nil
		}
	}
}

// Close closes the attachment (the process is not affected).
func (a *Attachment) Close() error {
	err := a.conn.Close(websocket.StatusNormalClosure, "")
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
