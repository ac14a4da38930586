//go:build linux

package fleet_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"

	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/fleet"
	"github.com/matrx-dev/matrx/fleet/kubetest"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

type series []time.Duration

func (s series) pct(p float64) time.Duration {
	c := append(series(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	return c[int(float64(len(c)-1)*p+0.5)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }

// BenchmarkPodCreate measures what the Kubernetes path adds to a create:
// a Pod created through the API server until it is Running (scheduler,
// binding, the provider's watch, matrxd's create, the status update and
// the client's watch), beside a create straight through matrxd's API on
// the same host, interleaved, and prints p50/p95 of each.
func BenchmarkPodCreate(b *testing.B) {
	cp := kubetest.Start(b)
	env := containerdtest.Start(b, "matrx-fleet-bench")
	applyRBAC(b, cp)
	cp.Namespace("bench", map[string]string{fleet.AnnotationAllowedUsers: "*"})
	d := startHost(b, env, "bench", 10)
	startProvider(b, providerArgs(cp, d, "matrx-bench", 10))
	ctx := context.Background()
	waitFor(b, "the node Ready", 2*time.Minute, func() (bool, string) {
		n, err := cp.Admin.CoreV1().Nodes().Get(ctx, "matrx-bench", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return nodeReady(n)
	})
	c := d.UnvalidatedClient(client.WithRetries(50), client.WithBackoff(20*time.Millisecond))
	defer c.Close()
	pods := cp.Admin.CoreV1().Pods("bench")
	const rounds = 20
	var viaK8s, direct series
	for i := 0; i < rounds*b.N; i++ {
		name := fmt.Sprintf("bench-%d", i)
		w, err := pods.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := pods.Create(ctx, agentPod(name, "bench"), metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		deadline := time.After(2 * time.Minute)
	running:
		for {
			select {
			case ev := <-w.ResultChan():
				if p, ok := ev.Object.(*corev1.Pod); ok && p.Status.Phase == corev1.PodRunning {
					break running
				}
			case <-deadline:
				b.Fatalf("pod %s not Running after 2 minutes", name)
			}
		}
		viaK8s = append(viaK8s, time.Since(t0))
		w.Stop()
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
		waitFor(b, name+" gone", 2*time.Minute, func() (bool, string) {
			_, err := pods.Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})

		t0 = time.Now()
		s, err := c.Create(ctx, "bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		direct = append(direct, time.Since(t0))
		if err := c.Delete(ctx, s.SandboxID, true); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	fmt.Printf("\nPod create → Running through the API server vs a direct matrxd create (%d each, same host, minimal image; ms)\n", len(viaK8s))
	fmt.Println("k8s: kube-apiserver → kube-scheduler → matrx-vk (Virtual Kubelet) → matrxd → Pod status → the client's watch")
	fmt.Printf("%-28s %9s %9s\n", "path", "p50", "p95")
	fmt.Printf("%-28s %9s %9s\n", "Pod create → Running", ms(viaK8s.pct(.5)), ms(viaK8s.pct(.95)))
	fmt.Printf("%-28s %9s %9s\n", "matrxd create → ready", ms(direct.pct(.5)), ms(direct.pct(.95)))
	fmt.Printf("%-28s %9s %9s\n", "added by Kubernetes", ms(viaK8s.pct(.5)-direct.pct(.5)), ms(viaK8s.pct(.95)-direct.pct(.95)))
}
