package fleet

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/matrx-dev/matrx/api/apitype"
)

func TestPodStatus(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	stopped := created.Add(time.Minute)
	synced := stopped.Add(-time.Second)
	sb := func(status, reason string, mut ...func(*apitype.Sandbox)) *apitype.Sandbox {
		s := &apitype.Sandbox{SandboxID: "sbx-0123456789ab", Status: status, CreatedAt: created, Image: "img", IPAddress: "10.9.0.7"}
		if reason != "" {
			s.StopReason, s.StoppedAt = &reason, &stopped
		}
		for _, m := range mut {
			m(s)
		}
		return s
	}
	for _, tc := range []struct {
		name          string
		view          podView
		phase         corev1.PodPhase
		reason        string
		msg           string
		ready         bool
		waiting, term string
	}{
		{"creating", podView{}, corev1.PodPending, "", "", false, reasonCreating, ""},
		{"retrying", podView{Waiting: "host full"}, corev1.PodPending, "", "host full", false, reasonCreating, ""},
		{"rejected", podView{Rejection: reject("no user")}, corev1.PodFailed, "Rejected", "no user", false, "Rejected", ""},
		{"starting", podView{Sandbox: sb("starting", "")}, corev1.PodPending, "", "", false, reasonCreating, ""},
		{"ready", podView{Sandbox: sb("ready", "")}, corev1.PodRunning, "", "", true, "", ""},
		{"running", podView{Sandbox: sb("running", "")}, corev1.PodRunning, "", "", true, "", ""},
		{"stopping", podView{Sandbox: sb("shutting_down", "")}, corev1.PodRunning, "", "stopping", false, "", ""},
		{"completed", podView{Sandbox: sb("stopped", "graceful_shutdown", func(s *apitype.Sandbox) { s.HotSyncedAt = &synced })},
			corev1.PodSucceeded, "", "complete; hot files synced at 2026-01-02T03:05:04Z", false, "", "Completed"},
		{"deleted", podView{Deleted: true, Sandbox: sb("stopped", "user_requested")}, corev1.PodSucceeded, "", "the Pod was deleted", false, "", "Completed"},
		{"deleted, sync pending", podView{Deleted: true, Sandbox: sb("stopped", "user_requested", func(s *apitype.Sandbox) {
			s.HotSyncPending, s.HotSyncError = true, "bucket away"
		})}, corev1.PodSucceeded, "", "still on the host, their sync is retried: bucket away", false, "", "Completed"},
		{"removed outside", podView{Sandbox: sb("stopped", "user_requested")}, corev1.PodFailed, "Deleted", "outside Kubernetes", false, "", "Deleted"},
		{"expired", podView{Sandbox: sb("expired", "expired")}, corev1.PodFailed, reasonDeadlineExceeded, "TTL", false, "", reasonDeadlineExceeded},
		{"agent error", podView{Sandbox: sb("failed", "error", func(s *apitype.Sandbox) { s.Error = "boom" })}, corev1.PodFailed, "Error", "boom", false, "", "Error"},
		{"create failed", podView{Sandbox: sb("failed", "error")}, corev1.PodFailed, "Stopped", "(error)", false, "", "Stopped"},
		{"lost", podView{Lost: true, Sandbox: sb("ready", "")}, corev1.PodFailed, "SandboxLost", "no record", false, "", "SandboxLost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := tc.view
			v.Pod, v.NodeIP = testPod(), "192.0.2.10"
			v.Pod.Status.QOSClass = corev1.PodQOSBestEffort
			st := v.status()
			cs := st.ContainerStatuses[0]
			if st.Phase != tc.phase || st.Reason != tc.reason || !strings.Contains(st.Message, tc.msg) || cs.Ready != tc.ready {
				t.Fatalf("phase %s reason %q message %q ready %v", st.Phase, st.Reason, st.Message, cs.Ready)
			}
			switch {
			case tc.waiting != "":
				if cs.State.Waiting == nil || cs.State.Waiting.Reason != tc.waiting {
					t.Fatalf("container state %+v, want waiting %s", cs.State, tc.waiting)
				}
			case tc.term != "":
				if cs.State.Terminated == nil || cs.State.Terminated.Reason != tc.term {
					t.Fatalf("container state %+v, want terminated %s", cs.State, tc.term)
				}
				if (tc.phase == corev1.PodSucceeded) != (cs.State.Terminated.ExitCode == 0) {
					t.Fatalf("exit code %d for %s", cs.State.Terminated.ExitCode, tc.phase)
				}
			default:
				if cs.State.Running == nil {
					t.Fatalf("container state %+v, want running", cs.State)
				}
			}
			if st.HostIP != "192.0.2.10" || st.QOSClass != corev1.PodQOSBestEffort {
				t.Fatalf("host ip %q qos %q", st.HostIP, st.QOSClass)
			}
			if v.Sandbox != nil && (st.PodIP != "10.9.0.7" || cs.ContainerID != "matrx://sbx-0123456789ab") {
				t.Fatalf("pod ip %q container id %q", st.PodIP, cs.ContainerID)
			}
			ready := false
			for _, c := range st.Conditions {
				if c.Type == corev1.PodReady {
					ready = c.Status == corev1.ConditionTrue
				}
			}
			if ready != tc.ready {
				t.Fatalf("Ready condition %v", ready)
			}
			// The same view gives the same status: a poll that learns
			// nothing sends nothing.
			if !equality.Semantic.DeepEqual(st, v.status()) {
				t.Fatal("status is not a function of the view")
			}
		})
	}
}

func TestNodeStatus(t *testing.T) {
	spec := nodeSpec{Name: "matrx-a", Host: "a", IP: "192.0.2.10", Port: 10250, Slots: 10, Subnet: "10.9.0.0/24"}
	f := hostFacts{
		Capacity: &apitype.Capacity{
			Slots: apitype.Allocation{Total: 10, Allocated: 4}, CPU: apitype.CPUAllocation{Total: 8, Allocated: 3.5},
			MemoryMB: apitype.Allocation{Total: 16384, Allocated: 2048}, NetworkSubnet: "10.9.0.0/24",
		},
		Images:     []apitype.Image{{Name: "localhost/matrx/minimal:latest", Digest: "sha256:ab", Size: 10}, {Name: "registry:5000/big", Size: 99}},
		Containerd: "1.6.20",
	}
	// The node's Pods hold 3 slots; one more sandbox was made outside
	// Kubernetes and is not allocatable.
	st := spec.status(f, ownUsage{Slots: 3, CPU: 3, MemoryMB: 1536}, metav1.Now())
	q := func(l corev1.ResourceList, n corev1.ResourceName) string { v := l[n]; return v.String() }
	if q(st.Capacity, ResourceSandbox) != "10" || q(st.Capacity, corev1.ResourcePods) != "10" || q(st.Capacity, corev1.ResourceCPU) != "8" ||
		q(st.Capacity, corev1.ResourceMemory) != "16Gi" {
		t.Fatalf("capacity %v", st.Capacity)
	}
	if q(st.Allocatable, ResourceSandbox) != "9" || q(st.Allocatable, corev1.ResourcePods) != "9" || q(st.Allocatable, corev1.ResourceCPU) != "7500m" ||
		q(st.Allocatable, corev1.ResourceMemory) != "15872Mi" {
		t.Fatalf("allocatable %v", st.Allocatable)
	}
	if st.Conditions[0].Type != corev1.NodeReady || st.Conditions[0].Status != corev1.ConditionTrue {
		t.Fatalf("ready: %+v", st.Conditions[0])
	}
	if len(st.Images) != 2 || st.Images[0].Names[0] != "registry:5000/big" ||
		st.Images[1].Names[1] != "localhost/matrx/minimal@sha256:ab" || st.Images[0].SizeBytes != 99 {
		t.Fatalf("images %+v", st.Images)
	}
	if st.Addresses[0].Type != corev1.NodeInternalIP || st.Addresses[0].Address != "192.0.2.10" || st.DaemonEndpoints.KubeletEndpoint.Port != 10250 {
		t.Fatalf("addresses %+v %+v", st.Addresses, st.DaemonEndpoints)
	}
	down := spec.status(hostFacts{Down: "matrxd does not answer: refused", DownReason: "MatrxdUnavailable"}, ownUsage{}, metav1.Now())
	if c := down.Conditions[0]; c.Status != corev1.ConditionFalse || c.Reason != "MatrxdUnavailable" || !strings.Contains(c.Message, "refused") {
		t.Fatalf("down: %+v", c)
	}
	n := spec.baseNode()
	if n.Labels[LabelHost] != "a" || n.Annotations[AnnotationNetworkSubnet] != "10.9.0.0/24" ||
		len(n.Spec.Taints) != 1 || n.Spec.Taints[0].Key != TaintKey || n.Spec.Taints[0].Value != TaintValue ||
		n.Spec.Taints[0].Effect != corev1.TaintEffectNoSchedule {
		t.Fatalf("base node %+v", n)
	}
}

func TestRepository(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                "busybox",
		"busybox:1.36":           "busybox",
		"localhost:5000/a/b:tag": "localhost:5000/a/b",
		"localhost:5000/a/b":     "localhost:5000/a/b",
		"docker.io/library/x:y":  "docker.io/library/x",
	} {
		if got := repository(in); got != want {
			t.Errorf("repository(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSlots(t *testing.T) {
	for _, tc := range []struct {
		flag   int
		matrxd int64
		want   int
		err    string
	}{
		{0, 10, 10, ""}, {5, 10, 5, ""}, {10, 0, 10, ""}, {0, 0, 0, "no slot count"}, {11, 10, 0, "exceeds matrxd's --max-sandboxes 10"},
	} {
		got, err := Config{Slots: tc.flag}.slots(tc.matrxd)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("slots(%d, %d) = %d, %v", tc.flag, tc.matrxd, got, err)
		}
	}
}
