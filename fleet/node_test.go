package fleet

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/api/apitype"
)

// hostStub answers as a matrxd in a given state would (the e2e test stops
// a real matrxd; a containerd outage is shown here, as matrxd's GET
// /health reports one).
type hostStub struct {
	health *apitype.Health
	err    error
}

func (h hostStub) Health(context.Context) (*apitype.Health, error) { return h.health, h.err }
func (h hostStub) Version(context.Context) (*apitype.Version, error) {
	return &apitype.Version{Containerd: "1.6.20"}, nil
}
func (h hostStub) Capacity(context.Context) (*apitype.Capacity, error) {
	return &apitype.Capacity{Slots: apitype.Allocation{Total: 4}, CPU: apitype.CPUAllocation{Total: 2}}, nil
}
func (h hostStub) Images(context.Context) (*apitype.ImageList, error) {
	return &apitype.ImageList{Images: []apitype.Image{{Name: "img"}}}, nil
}

func TestFacts(t *testing.T) {
	ctx := context.Background()
	f := facts(ctx, hostStub{health: &apitype.Health{Status: "healthy", ContainerdStatus: "ok"}})
	if f.Down != "" || f.Capacity == nil || len(f.Images) != 1 || f.Containerd != "1.6.20" {
		t.Fatalf("healthy: %+v", f)
	}
	f = facts(ctx, hostStub{health: &apitype.Health{Status: "degraded", ContainerdStatus: "containerd did not answer: connection refused"}})
	if f.DownReason != "ContainerdUnavailable" || !strings.Contains(f.Down, "connection refused") {
		t.Fatalf("containerd down: %+v", f)
	}
	f = facts(ctx, hostStub{err: errors.Join(errors.New("dial unix: no such file"), errdefs.ErrUnavailable)})
	if f.DownReason != "MatrxdUnavailable" || !strings.Contains(f.Down, "no such file") {
		t.Fatalf("matrxd down: %+v", f)
	}
	st := nodeSpec{Name: "n", Host: "h", Slots: 4}.status(f, ownUsage{}, nowish())
	if st.Conditions[0].Status != "False" || st.Conditions[0].Reason != "MatrxdUnavailable" {
		t.Fatalf("node status with matrxd down: %+v", st.Conditions[0])
	}
}
