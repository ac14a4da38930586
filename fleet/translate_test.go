package fleet

import (
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/matrx-dev/matrx/api/apitype"
)

func testPod(mut ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "agent-1", UID: "uid-1",
			Annotations: map[string]string{AnnotationUserID: "alice"}, Labels: map[string]string{"app": "agent"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name: "agent", Image: "localhost/matrx/minimal:latest",
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{ResourceSandbox: resource.MustParse("1")},
					Limits:   corev1.ResourceList{ResourceSandbox: resource.MustParse("1")},
				},
			}},
			ServiceAccountName: "default",
		},
	}
	for _, m := range mut {
		m(p)
	}
	return p
}

func TestTranslate(t *testing.T) {
	deadline := int64(600)
	pod := testPod(func(p *corev1.Pod) {
		c := &p.Spec.Containers[0]
		c.Resources.Limits[corev1.ResourceCPU] = resource.MustParse("1500m")
		c.Resources.Requests[corev1.ResourceMemory] = resource.MustParse("300Mi")
		c.Command, c.Args = []string{"python3", "-m"}, []string{"agent", "--fast"}
		c.WorkingDir = "/home/agent/work"
		c.Env = []corev1.EnvVar{
			{Name: "GREETING", Value: "hi"},
			{Name: "MSG", Value: "$(GREETING) there $$(GREETING) $(UNKNOWN)"},
			{Name: "POD", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
			{Name: "NODE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
			{Name: "CPUS", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.cpu"}}},
			{Name: "MEM_MI", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory", Divisor: resource.MustParse("1Mi")}}},
		}
		p.Spec.ActiveDeadlineSeconds = &deadline
		p.Annotations[AnnotationDiskMB] = "2048"
		p.Annotations[AnnotationNetwork] = "default"
		p.Annotations[AnnotationNetworkAllow] = "203.0.113.0/24, 198.51.100.7/32"
		p.Spec.Volumes = []corev1.Volume{{Name: "kube-api-access-x1y2z", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}}}
		c.VolumeMounts = []corev1.VolumeMount{{Name: "kube-api-access-x1y2z", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}}
		c.Ports = []corev1.ContainerPort{{ContainerPort: 8080}}
	})
	req, rej := translate(pod, "bob, alice", true, "matrx-a")
	if rej != nil {
		t.Fatal(rej)
	}
	want := apitype.SandboxConfig{
		Image: "localhost/matrx/minimal:latest", CPU: 1.5, MemoryMB: 300, DiskMB: 2048, TTLSeconds: 600,
		Env: map[string]string{"GREETING": "hi", "MSG": "hi there $(GREETING) $(UNKNOWN)", "POD": "agent-1", "APP": "agent",
			"NODE": "matrx-a", "CPUS": "2", "MEM_MI": "300"},
		Labels:  map[string]string{labelPodUID: "uid-1", labelPodNamespace: "team-a", labelPodName: "agent-1", labelNode: "matrx-a"},
		Network: &apitype.NetworkConfig{Mode: "default", Allow: []string{"203.0.113.0/24", "198.51.100.7/32"}},
	}
	if req.UserID != "alice" || !reflect.DeepEqual(req.Config, want) {
		t.Fatalf("got %s %+v\nwant %+v", req.UserID, req.Config, want)
	}
	if !reflect.DeepEqual(req.Main, []string{"python3", "-m", "agent", "--fast"}) || req.WorkingDir != "/home/agent/work" {
		t.Fatalf("main: %q in %q", req.Main, req.WorkingDir)
	}
	if len(req.Ignored) != 1 || !strings.HasPrefix(req.Ignored[0], "ports") {
		t.Fatalf("ignored: %q", req.Ignored)
	}
	// Nothing set: matrxd's defaults apply, and there is no main process.
	req, rej = translate(testPod(), "*", true, "matrx-a")
	if rej != nil || req.Config.CPU != 0 || req.Config.MemoryMB != 0 || req.Config.TTLSeconds != 0 || req.Config.Env != nil ||
		req.Config.Network != nil || len(req.Main) != 0 || len(req.Ignored) != 0 {
		t.Fatalf("defaults: %v %+v", rej, req)
	}
}

func TestTranslateRejects(t *testing.T) {
	secret := &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}
	yes := true
	for _, tc := range []struct {
		name       string
		mut        func(*corev1.Pod)
		allowed    string
		allowedSet bool
		want       string
	}{
		{"no user", func(p *corev1.Pod) { delete(p.Annotations, AnnotationUserID) }, "*", true, "annotation matrx.dev/user-id is required"},
		{"namespace allows none", nil, "", false, "namespace team-a allows no matrx user"},
		{"namespace allows others", nil, "bob,carol", true, `may not claim user "alice"`},
		{"empty allow list", nil, "", true, `may not claim user "alice"`},
		{"two containers", func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, p.Spec.Containers[0]) }, "*", true, "exactly one container"},
		{"init container", func(p *corev1.Pod) { p.Spec.InitContainers = []corev1.Container{{Name: "i"}} }, "*", true, "init containers"},
		{"volume", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		}, "*", true, `volume "data"`},
		{"token-named volume that is not a token", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
		}, "*", true, `volume "kube-api-access-x"`},
		{"host network", func(p *corev1.Pod) { p.Spec.HostNetwork = true }, "*", true, "hostNetwork"},
		{"privileged", func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: &yes}
		}, "*", true, "privileged"},
		{"no slot", func(p *corev1.Pod) { p.Spec.Containers[0].Resources = corev1.ResourceRequirements{} }, "*", true, "must request matrx.dev/sandbox: 1"},
		{"two slots", func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Requests[ResourceSandbox] = resource.MustParse("2")
		}, "*", true, "not 2"},
		{"secret env", func(p *corev1.Pod) { p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "K", ValueFrom: secret}} }, "*", true, "env K: values from Secrets"},
		{"envFrom", func(p *corev1.Pod) {
			p.Spec.Containers[0].EnvFrom = []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{}}}
		}, "*", true, "envFrom"},
		{"pod ip field", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}}
		}, "*", true, `fieldRef "status.podIP"`},
		{"disk", func(p *corev1.Pod) { p.Annotations[AnnotationDiskMB] = "2G" }, "*", true, "matrx.dev/disk-mb"},
		{"network mode", func(p *corev1.Pod) { p.Annotations[AnnotationNetwork] = "host" }, "*", true, "want default or none"},
		{"network allow", func(p *corev1.Pod) { p.Annotations[AnnotationNetworkAllow] = "10.0.0.1" }, "*", true, `"10.0.0.1" is not a CIDR`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := testPod()
			if tc.mut != nil {
				tc.mut(pod)
			}
			req, rej := translate(pod, tc.allowed, tc.allowedSet, "matrx-a")
			if rej == nil || !strings.Contains(rej.Message, tc.want) || rej.Reason != "Rejected" {
				t.Fatalf("got %+v, %v; want a rejection with %q", req, rej, tc.want)
			}
		})
	}
}

func TestUserAllowed(t *testing.T) {
	for _, tc := range []struct {
		allowed, user string
		ok            bool
	}{
		{"*", "anyone", true}, {"alice", "alice", true}, {" bob , alice ", "alice", true},
		{"alicex", "alice", false}, {"", "alice", false}, {"bob,*", "z", true}, {"a,,b", "", false},
	} {
		if got := userAllowed(tc.allowed, tc.user); got != tc.ok {
			t.Errorf("userAllowed(%q, %q) = %v", tc.allowed, tc.user, got)
		}
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "1", "B": "x$(A)"}
	for in, want := range map[string]string{
		"":             "",
		"plain":        "plain",
		"$(A)":         "1",
		"$(A)$(A)":     "11",
		"$$(A)":        "$(A)",
		"$(B)":         "x$(A)",
		"$(C)":         "$(C)",
		"$(A":          "$(A",
		"$":            "$",
		"a$b":          "a$b",
		"$$":           "$",
		"pre $(A) end": "pre 1 end",
	} {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"$(A)", "$$", "$(", "x$(A)$(B", "$"} {
		f.Add(s)
	}
	env := map[string]string{"A": "1", "B": ""}
	f.Fuzz(func(t *testing.T, s string) {
		out := expand(s, env)
		if len(out) > len(s) {
			t.Fatalf("expand(%q) = %q grew with one-byte values", s, out)
		}
	})
}
