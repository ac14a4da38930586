//go:build linux

package daemon_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
)

// TestCapacity: GET /capacity reports the host's slots, CPUs and memory and
// what live sandboxes hold; --max-sandboxes refuses a create beyond the
// slots (429, naming the flag) even when many race for the last one, while
// a retry of a live sandbox's Idempotency-Key is still answered; a
// sandbox's bridge address is on its record.
func TestCapacity(t *testing.T) {
	h := daemontest.Start(t, func(c *daemon.Config) { c.Limits.MaxSandboxes = 3 })
	ctx := context.Background()
	c := h.Client()
	capa, err := c.Capacity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if capa.Slots != (apitype.Allocation{Total: 3}) || capa.CPU.Total < 1 || capa.CPU.Allocated != 0 ||
		capa.MemoryMB.Total < 256 || capa.MemoryMB.Allocated != 0 || capa.NetworkSubnet != h.Config.Network.Subnet.String() {
		t.Fatalf("empty host: %+v", capa)
	}
	first, err := c.Create(ctx, "alice", &apitype.SandboxConfig{CPU: 0.5, MemoryMB: 128, Network: &apitype.NetworkConfig{Mode: "default"}}, client.WithIdempotencyKey("cap-first"))
	if err != nil {
		t.Fatal(err)
	}
	ip, err := netip.ParseAddr(first.IPAddress)
	if err != nil || !h.Config.Network.Subnet.Contains(ip) {
		t.Fatalf("ip_address %q is not in %s", first.IPAddress, h.Config.Network.Subnet)
	}
	if got, _ := c.Get(ctx, first.SandboxID); got.IPAddress != first.IPAddress {
		t.Fatalf("get: ip_address %q, created with %q", got.IPAddress, first.IPAddress)
	}
	// Four creates race for the two slots left: exactly two win.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.Create(ctx, "bob", nil)
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "--max-sandboxes"):
			t.Errorf("a create on a full host: %v, want 429 naming --max-sandboxes", err)
		}
	}
	if won != 2 {
		t.Fatalf("%d of 4 racing creates took the 2 free slots", won)
	}
	capa, err = c.Capacity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if capa.Slots != (apitype.Allocation{Total: 3, Allocated: 3}) || capa.CPU.Allocated != 0.5+2*h.Config.Limits.DefaultCPU ||
		capa.MemoryMB.Allocated != 128+2*h.Config.Limits.DefaultMemoryMB {
		t.Fatalf("full host: %+v", capa)
	}
	// The host is full, but a retried create of a live sandbox is answered.
	again, err := c.Create(ctx, "alice", &apitype.SandboxConfig{CPU: 0.5, MemoryMB: 128}, client.WithIdempotencyKey("cap-first"))
	if err != nil || again.SandboxID != first.SandboxID {
		t.Fatalf("retry on a full host: %v %+v", err, again)
	}
	if err := c.Delete(ctx, first.SandboxID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, "alice", nil); err != nil {
		t.Fatalf("create after a slot was freed: %v", err)
	}
	if _, err := c.Create(ctx, "alice", nil); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("create beyond the slots again: %v", err)
	}
}

// TestKeyedCreateOutlivesItsCaller: a create carrying an Idempotency-Key
// whose caller disconnects mid-way (a provider killed while creating) runs
// to the end, and the retry gets that sandbox, not a refusal of the key.
func TestKeyedCreateOutlivesItsCaller(t *testing.T) {
	h := daemontest.Start(t)
	c := h.UnvalidatedClient(client.WithRetries(0)) // the cut request has no response to validate
	defer c.Close()
	for i := range 3 {
		key := "caller-gone-" + string(rune('a'+i))
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(10+10*i)*time.Millisecond)
		_, err := c.Create(ctx, "carol", nil, client.WithIdempotencyKey(key))
		cancel()
		if err == nil {
			t.Logf("create %d finished before its caller left", i)
		}
		s, err := h.Client().Create(context.Background(), "carol", nil, client.WithIdempotencyKey(key))
		if err != nil || s.Status != "ready" {
			t.Fatalf("retry of a create whose caller left: %v %+v", err, s)
		}
	}
	l, err := h.Client().List(context.Background(), "carol", true)
	if err != nil || len(l.Sandboxes) != 3 {
		t.Fatalf("want one sandbox per key, got %v %d", err, len(l.Sandboxes))
	}
	for _, s := range l.Sandboxes {
		if s.Status != "ready" {
			t.Errorf("sandbox %s is %s", s.SandboxID, s.Status)
		}
	}
}
