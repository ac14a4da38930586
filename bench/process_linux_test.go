package bench

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/api/client/attach"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
)

// BenchmarkInteractive measures what an interactive client feels, through
// matrxd's API: the time to the first output byte of a streamed exec and
// to its end, the attach round trip (a keystroke sent over the WebSocket
// until the terminal's echo of it comes back), each beside the blocking
// exec of the same command.
func BenchmarkInteractive(b *testing.B) {
	h := daemontest.Start(b, func(c *daemon.Config) { c.ExpiryInterval = time.Minute })
	c := h.UnvalidatedClient(client.WithRetries(50), client.WithBackoff(20*time.Millisecond))
	defer c.Close()
	ctx := context.Background()
	s, err := c.Create(ctx, "bench", &apitype.SandboxConfig{MemoryMB: 512})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Delete(ctx, s.SandboxID, false)
	const cmd = "echo first; sleep 0.05; echo last"
	var blocking, firstByte, streamEnd, keystroke series
	p, err := c.StartProcess(ctx, s.SandboxID, apitype.ProcessRequest{Command: "cat", PTY: &apitype.PTYSize{Rows: 24, Cols: 80}})
	if err != nil {
		b.Fatal(err)
	}
	a, err := attach.Attach(ctx, c, s.SandboxID, p.ProcessID, -1)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	for i := 0; i < execs/2; i++ {
		t0 := time.Now()
		if _, err := c.Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: cmd}); err != nil {
			b.Fatal(err)
		}
		blocking = append(blocking, time.Since(t0))

		t0 = time.Now()
		st, err := c.ExecStream(ctx, s.SandboxID, apitype.ExecRequest{Command: cmd})
		if err != nil {
			b.Fatal(err)
		}
		first := false
		for {
			ev, err := st.Next()
			if err != nil {
				b.Fatal(err)
			}
			if ev.Type == apitype.EventData && !first {
				first = true
				firstByte = append(firstByte, time.Since(t0))
			}
			if ev.Type == apitype.EventEnd {
				break
			}
		}
		st.Close()
		streamEnd = append(streamEnd, time.Since(t0))

		key := []byte{byte('a' + i%26)}
		t0 = time.Now()
		if err := a.Send(ctx, key); err != nil {
			b.Fatal(err)
		}
		var seen []byte
		for !bytes.Contains(seen, key) {
			out, _, err := a.Recv(ctx)
			if err != nil {
				b.Fatal(err)
			}
			seen = append(seen, out...)
		}
		keystroke = append(keystroke, time.Since(t0))
	}
	fmt.Printf("\ninteractive latency through matrxd (%d rounds; command %q; ms)\n", len(blocking), cmd)
	fmt.Printf("%-40s %9s %9s\n", "measure", "p50", "p90")
	for _, r := range []struct {
		name string
		s    series
	}{
		{"blocking exec, whole call", blocking},
		{"streamed exec, first output byte", firstByte},
		{"streamed exec, end event", streamEnd},
		{"attach, keystroke to echo (pty)", keystroke},
	} {
		fmt.Printf("%-40s %9s %9s\n", r.name, ms(r.s.pct(.5)), ms(r.s.pct(.9)))
	}
}
