package execagent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// SocketName is the agent's abstract Unix socket (in the sandbox's network
// namespace; the leading NUL makes it abstract: no file anywhere).
const SocketName = "\x00matrx-exec-agent"

// MaxRequest bounds a request (argv and environment); MaxReply one reply line.
const (
	MaxRequest = 4 << 20
	MaxReply   = 4096
)

// Request is one command to start. Its stdin, stdout and stderr arrive as
// three file descriptors with the request.
type Request struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
}

// Reply is one line from the agent: first {"pid":N} (the child's pid in
// the sandbox) or {"error":...}, then {"exit":N} once the child ended
// (its exit status, or 128+signal as shells report it).
type Reply struct {
	Pid   int    `json:"pid,omitempty"`
	Exit  *int   `json:"exit,omitempty"`
	Error string `json:"error,omitempty"`
}

// encodeRequest frames req: a 4-byte big-endian length, then JSON.
func encodeRequest(req Request) ([]byte, error) {
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return nil, errors.New("exec agent request without a program")
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRequest {
		return nil, fmt.Errorf("exec agent request of %d bytes exceeds %d", len(b), MaxRequest)
	}
	out := make([]byte, 4, 4+len(b))
	binary.BigEndian.PutUint32(out, uint32(len(b)))
	return append(out, b...), nil
}

// decodeReply parses one reply line.
func decodeReply(line []byte) (Reply, error) {
	var r Reply
	if err := json.Unmarshal(line, &r); err != nil {
		return Reply{}, fmt.Errorf("exec agent reply: %w", err)
	}
	return r, nil
}
