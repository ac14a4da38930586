//go:build linux

package fleet_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes/scheme"

	"golang.org/x/sys/unix"

	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/fleet"
	"github.com/matrx-dev/matrx/fleet/kubetest"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/testenv"
)

// host is one matrxd and its provider.
type host struct {
	name string // the node's name
	d    *daemontest.Harness
	vk   *provider
}

// startHost starts a matrxd with its own containerd namespace, socket,
// state dir, bridge and subnet on the shared private containerd, with
// slots sandbox slots.
func startHost(t testing.TB, env *containerdtest.Env, name string, slots int) *daemontest.Harness {
	return daemontest.StartIn(t, env, func(c *daemon.Config) {
		c.Socket = filepath.Join(env.Dir, name+".sock")
		c.StateDir = filepath.Join(env.Dir, "state-"+name)
		c.ContainerdNamespace = "matrx-fleet-" + name
		c.Limits.MaxSandboxes = slots
		c.Limits.DefaultDiskMB = 64 // small disks: 20 sandboxes share this machine
		c.Limits.DefaultMemoryMB = 128
		c.Limits.DefaultCPU = 0.25
	})
}

// provider is one matrx-vk process.
type provider struct {
	t    testing.TB
	args []string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan error
	mu   sync.Mutex
}

// buildProvider builds cmd/matrx-vk once per test binary.
var buildProvider = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "matrx-vk-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "matrx-vk")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/matrx-vk")
	cmd.Dir = containerdtest.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build matrx-vk: %v\n%s", err, out)
	}
	return bin, nil
})

// providerArgs are the flags of a provider for node on host d, as a node
// identity of the cluster (system:node:NAME) that bootstrap/fleet/rbac.yaml
// gives namespace reads to.
func providerArgs(cp *kubetest.ControlPlane, d *daemontest.Harness, node string, slots int) []string {
	cert, key := cp.Cert(node, nil, []string{"127.0.0.1"}, []string{node}, true)
	return []string{
		"--kubeconfig", cp.Kubeconfig("system:node:"+node, "system:nodes", "matrx:providers"),
		"--socket", d.Config.Socket, "--node-name", node, "--host", strings.TrimPrefix(node, "matrx-"),
		"--slots", fmt.Sprint(slots), "--node-ip", "127.0.0.1", "--listen-address", "127.0.0.1:0",
		"--tls-cert-file", cert, "--tls-key-file", key, "--client-ca-file", cp.CAFile,
		"--status-interval", "500ms", "--log-format", "text", "--log-level", "info",
	}
}

func startProvider(t testing.TB, args []string) *provider {
	t.Helper()
	bin, err := buildProvider()
	if err != nil {
		t.Fatal(err)
	}
	p := &provider{t: t, args: args, log: &bytes.Buffer{}}
	p.cmd = exec.Command(bin, args...)
	// The whole log goes to a file that outlives the test (its name is
	// printed on failure); the buffer holds it for the test to read.
	f, err := os.CreateTemp("", "matrx-vk-"+args[slices.Index(args, "--node-name")+1]+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	w := io.MultiWriter(&lockedWriter{b: p.log, mu: &p.mu}, f)
	p.cmd.Stdout, p.cmd.Stderr = w, w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.stop()
		f.Close()
		if t.Failed() {
			t.Logf("provider %s log (tail; all of it in %s):\n%s", args[slices.Index(args, "--node-name")+1], f.Name(), p.tail(40))
		} else {
			os.Remove(f.Name())
		}
	})
	return p
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (p *provider) tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := strings.Split(strings.TrimRight(p.log.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// exited reports whether the provider process has ended.
func (p *provider) exited() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return true
	default:
		return false
	}
}

// kill ends the provider with SIGKILL, as a crash would.
func (p *provider) kill() {
	p.cmd.Process.Kill()
	<-p.done
	p.done <- nil
}

func (p *provider) stop() {
	select {
	case err := <-p.done:
		p.done <- err
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(45 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
	p.done <- nil
}

// applyRBAC applies bootstrap/fleet/rbac.yaml as shipped.
func applyRBAC(t testing.TB, cp *kubetest.ControlPlane) {
	b, err := os.ReadFile(filepath.Join(containerdtest.RepoRoot(), "bootstrap", "fleet", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, doc := range strings.Split(string(b), "\n---\n") {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("rbac.yaml: %v", err)
		}
		switch o := obj.(type) {
		case *rbacv1.ClusterRole:
			_, err = cp.Admin.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = cp.Admin.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("rbac.yaml holds a %T", obj)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// agentPod is a Pod for a matrx node: it tolerates the taint, requests a
// slot and names its user.
func agentPod(name, user string, mut ...func(*corev1.Pod)) *corev1.Pod {
	grace := int64(5)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{fleet.AnnotationUserID: user}},
		Spec: corev1.PodSpec{
			Tolerations: []corev1.Toleration{{Key: fleet.TaintKey, Value: fleet.TaintValue, Effect: corev1.TaintEffectNoSchedule}},
			Containers: []corev1.Container{{
				Name: "agent", Image: containerdtest.MinimalImage,
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{fleet.ResourceSandbox: resource.MustParse("1")}},
			}},
			TerminationGracePeriodSeconds: &grace,
		},
	}
	for _, m := range mut {
		m(p)
	}
	return p
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not after %v: %s", what, timeout, last)
}

func nodeReady(n *corev1.Node) (bool, string) {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue, c.Reason + ": " + c.Message
		}
	}
	return false, "no Ready condition"
}

// TestFleet: two matrxd hosts registered as two nodes by two providers
// with 10 slots each. kube-scheduler places 20 Pods, exactly 10 per host,
// each host's sandboxes are exactly the Pods bound to it, and a 21st Pod
// stays Pending as Unschedulable; Pods that cannot be sandboxes fail with
// events; kubectl exec and logs work through the provider; a provider
// killed and restarted makes no duplicate and still deletes what was
// deleted while it was away; deleting the Pods leaves both hosts empty with
// hot files synced; a provider refuses a subnet another node uses; and a
// stopped matrxd makes its node NotReady.
func TestFleet(t *testing.T) {
	testenv.NeedRoot(t, "matrxd hosts")
	cp := kubetest.Start(t)
	env := containerdtest.Start(t, "matrx-fleet-a", "matrx-fleet-b")
	ctx := context.Background()
	applyRBAC(t, cp)
	cp.Namespace("agents", map[string]string{fleet.AnnotationAllowedUsers: "alice, bob"})
	cp.Namespace("others", nil)
	hosts := []*host{{name: "matrx-a"}, {name: "matrx-b"}}
	for _, h := range hosts {
		h.d = startHost(t, env, strings.TrimPrefix(h.name, "matrx-"), 10)
	}
	if hosts[0].d.Config.Network.Subnet.Overlaps(hosts[1].d.Config.Network.Subnet) {
		t.Fatal("the test hosts' subnets overlap")
	}
	for _, h := range hosts {
		h.vk = startProvider(t, providerArgs(cp, h.d, h.name, 10))
	}
	nodes := cp.Admin.CoreV1().Nodes()
	for _, h := range hosts {
		waitFor(t, h.name+" registered and Ready", 2*time.Minute, func() (bool, string) {
			if h.vk.exited() {
				t.Fatalf("provider %s exited:\n%s", h.name, h.vk.tail(20))
			}
			n, err := nodes.Get(ctx, h.name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return nodeReady(n)
		})
		n, _ := nodes.Get(ctx, h.name, metav1.GetOptions{})
		slots := n.Status.Capacity[fleet.ResourceSandbox]
		pods := n.Status.Allocatable[corev1.ResourcePods]
		if slots.Value() != 10 || pods.Value() != 10 || n.Labels[fleet.LabelHost] != strings.TrimPrefix(h.name, "matrx-") ||
			n.Annotations[fleet.AnnotationNetworkSubnet] != h.d.Config.Network.Subnet.String() ||
			!slices.ContainsFunc(n.Spec.Taints, func(tt corev1.Taint) bool { return tt.Key == fleet.TaintKey && tt.Value == fleet.TaintValue }) ||
			!slices.ContainsFunc(n.Status.Images, func(i corev1.ContainerImage) bool { return slices.Contains(i.Names, containerdtest.MinimalImage) }) {
			t.Fatalf("node %s: capacity %v allocatable %v labels %v annotations %v taints %v images %v",
				h.name, n.Status.Capacity, n.Status.Allocatable, n.Labels, n.Annotations, n.Spec.Taints, n.Status.Images)
		}
		// Virtual Kubelet creates the Lease on its first heartbeat, which
		// may come after the node reads Ready.
		waitFor(t, h.name+"'s lease", 30*time.Second, func() (bool, string) {
			_, err := cp.Admin.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, h.name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return true, ""
		})
	}

	if !t.Run("rejections", func(t *testing.T) { testRejections(t, cp) }) {
		t.FailNow()
	}

	// 20 Pods, alternating users: all Running, 10 per host.
	pods := cp.Admin.CoreV1().Pods("agents")
	// Two have a command (a main process), each pinned to a host with a
	// node selector: the scheduler still places them, and the 18 others
	// fill both hosts' remaining slots.
	for i := range 20 {
		user := []string{"alice", "bob"}[i%2]
		var mut []func(*corev1.Pod)
		switch i {
		case 0:
			mut = append(mut, func(p *corev1.Pod) {
				p.Spec.NodeSelector = map[string]string{fleet.LabelHost: "a"}
				p.Spec.Containers[0].Command = []string{"sh", "-c"}
				p.Spec.Containers[0].Args = []string{`echo "hello from $SANDBOX_ID"; echo oops >&2; sleep 0.3; echo last; exec sleep 3600`}
			})
		case 1:
			mut = append(mut, func(p *corev1.Pod) {
				p.Spec.NodeSelector = map[string]string{fleet.LabelHost: "b"}
				c := &p.Spec.Containers[0]
				c.Command, c.Stdin, c.TTY = []string{"sh", "-c", `read x; echo "got $x"; exit 3`}, true, true
			})
		}
		if _, err := pods.Create(ctx, agentPod(fmt.Sprintf("agent-%02d", i), user, mut...), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "20 Pods Running", 3*time.Minute, func() (bool, string) {
		l, err := pods.List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		running := 0
		for _, p := range l.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		return running == 20, fmt.Sprintf("%d of %d Running", running, len(l.Items))
	})
	for _, h := range hosts {
		checkHostMatchesPods(t, cp, h, 10)
	}

	// A 21st: no slot left anywhere, so the scheduler keeps it Pending.
	if _, err := pods.Create(ctx, agentPod("agent-20", "alice"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the 21st Pod Unschedulable", time.Minute, func() (bool, string) {
		p, err := pods.Get(ctx, "agent-20", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
				return p.Spec.NodeName == "" && p.Status.Phase == corev1.PodPending, c.Message
			}
		}
		return false, fmt.Sprintf("phase %s node %q conditions %v", p.Status.Phase, p.Spec.NodeName, p.Status.Conditions)
	})

	if !t.Run("exec and logs", func(t *testing.T) { testExecAndLogs(t, cp, hosts) }) {
		t.FailNow()
	}
	if !t.Run("main process", func(t *testing.T) { testMainProcess(t, cp) }) {
		t.FailNow()
	}
	if !t.Run("provider restart", func(t *testing.T) { testProviderRestart(t, cp, hosts[0]) }) {
		t.FailNow()
	}

	// The 21st found a slot freed on a host while the rest ran.
	waitFor(t, "the 21st Pod Running once a slot freed", 2*time.Minute, func() (bool, string) {
		p, err := pods.Get(ctx, "agent-20", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase) + " on " + p.Spec.NodeName
	})

	if !t.Run("delete", func(t *testing.T) { testDeleteAll(t, cp, hosts) }) {
		t.FailNow()
	}
	if !t.Run("subnet overlap", func(t *testing.T) { testSubnetOverlap(t, cp, hosts[0]) }) {
		t.FailNow()
	}
	if !t.Run("matrxd down", func(t *testing.T) { testMatrxdDown(t, cp, hosts[1]) }) {
		t.FailNow()
	}
}

// checkHostMatchesPods: the host's live sandboxes are exactly the Pods
// bound to its node (by the Pod UID label), and each Pod's IP is its
// sandbox's, in the host's subnet.
func checkHostMatchesPods(t *testing.T, cp *kubetest.ControlPlane, h *host, want int) {
	t.Helper()
	ctx := context.Background()
	l, err := cp.Admin.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", h.name).String()})
	if err != nil {
		t.Fatal(err)
	}
	bound := map[string]corev1.Pod{}
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			bound[string(p.UID)] = p
		}
	}
	out, _, code := h.d.CLI("ls", "--json")
	if code != 0 {
		t.Fatalf("matrx ls on %s: exit %d", h.name, code)
	}
	sbs, err := h.d.Client().List(ctx, "", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(bound) != want || len(sbs.Sandboxes) != want {
		t.Fatalf("%s: %d Pods bound, %d live sandboxes, want %d of each\nmatrx ls: %s", h.name, len(bound), len(sbs.Sandboxes), want, out)
	}
	for _, sb := range sbs.Sandboxes {
		if !strings.Contains(out, sb.SandboxID) {
			t.Errorf("matrx ls on %s does not show %s", h.name, sb.SandboxID)
		}
		p, ok := bound[sb.Config.Labels["matrx.dev/pod-uid"]]
		if !ok {
			t.Errorf("%s: sandbox %s belongs to no Pod bound to the node (labels %v)", h.name, sb.SandboxID, sb.Config.Labels)
			continue
		}
		ip, err := netip.ParseAddr(p.Status.PodIP)
		if err != nil || p.Status.PodIP != sb.IPAddress || !h.d.Config.Network.Subnet.Contains(ip) {
			t.Errorf("Pod %s: IP %q, sandbox %s has %q (subnet %s)", p.Name, p.Status.PodIP, sb.SandboxID, sb.IPAddress, h.d.Config.Network.Subnet)
		}
		if got := p.Status.ContainerStatuses[0].ContainerID; got != "matrx://"+sb.SandboxID {
			t.Errorf("Pod %s: container id %q, want matrx://%s", p.Name, got, sb.SandboxID)
		}
		if sb.UserID != p.Annotations[fleet.AnnotationUserID] {
			t.Errorf("Pod %s is %s's, its sandbox %s's", p.Name, p.Annotations[fleet.AnnotationUserID], sb.UserID)
		}
	}
}

// podEvents are the reasons and messages of a Pod's events.
func podEvents(t *testing.T, cp *kubetest.ControlPlane, ns, name string) string {
	l, err := cp.Admin.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range l.Items {
		fmt.Fprintf(&b, "%s %s: %s\n", e.Type, e.Reason, e.Message)
	}
	return b.String()
}

// testRejections: Pods that cannot be sandboxes fail, with a Warning event
// saying why, and make none.
func testRejections(t *testing.T, cp *kubetest.ControlPlane) {
	ctx := context.Background()
	cases := []struct {
		ns   string
		pod  *corev1.Pod
		want string
	}{
		{"agents", agentPod("no-user", "", func(p *corev1.Pod) { delete(p.Annotations, fleet.AnnotationUserID) }), "annotation matrx.dev/user-id is required"},
		{"agents", agentPod("wrong-user", "mallory"), `may not claim user "mallory"`},
		{"others", agentPod("no-tenants", "alice"), "namespace others allows no matrx user"},
		{"agents", agentPod("two", "alice", func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "side", Image: containerdtest.MinimalImage})
		}), "exactly one container"},
		{"agents", agentPod("vol", "alice", func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		}), `volume "scratch" is not supported`},
		{"agents", agentPod("secret-env", "alice", func(p *corev1.Pod) {
			p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{
				SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k"}}}}
		}), "values from Secrets"},
		{"agents", agentPod("no-image", "alice", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "localhost/matrx/absent:latest" }), "matrxd refused the sandbox"},
	}
	for _, c := range cases {
		if _, err := cp.Admin.CoreV1().Pods(c.ns).Create(ctx, c.pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create %s: %v", c.pod.Name, err)
		}
	}
	for _, c := range cases {
		waitFor(t, c.pod.Name+" Failed with an event", time.Minute, func() (bool, string) {
			p, err := cp.Admin.CoreV1().Pods(c.ns).Get(ctx, c.pod.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			ev := podEvents(t, cp, c.ns, c.pod.Name)
			return p.Status.Phase == corev1.PodFailed && strings.Contains(p.Status.Message, c.want) && strings.Contains(ev, c.want),
				fmt.Sprintf("phase %s message %q events:\n%s", p.Status.Phase, p.Status.Message, ev)
		})
		if err := cp.Admin.CoreV1().Pods(c.ns).Delete(ctx, c.pod.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cases {
		waitFor(t, c.pod.Name+" gone", time.Minute, func() (bool, string) {
			_, err := cp.Admin.CoreV1().Pods(c.ns).Get(ctx, c.pod.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	}
}

// testExecAndLogs: kubectl exec runs in the Pod's sandbox on its host
// (exit codes pass through); kubectl logs of a Pod without a command is
// empty.
func testExecAndLogs(t *testing.T, cp *kubetest.ControlPlane, hosts []*host) {
	ctx := context.Background()
	for _, h := range hosts {
		l, err := cp.Admin.CoreV1().Pods("agents").List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", h.name).String()})
		if err != nil || len(l.Items) == 0 {
			t.Fatalf("no Pod on %s: %v", h.name, err)
		}
		var p corev1.Pod
		for _, q := range l.Items {
			if len(q.Spec.Containers[0].Command) == 0 {
				p = q
				break
			}
		}
		out, errOut, code := cp.Kubectl("exec", "-n", "agents", p.Name, "--", "sh", "-c", `echo "$SANDBOX_ID $USER_ID" && echo note > /home/agent/note-`+p.Name)
		sb := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "matrx://")
		if code != 0 || out != sb+" "+p.Annotations[fleet.AnnotationUserID]+"\n" {
			t.Fatalf("kubectl exec %s on %s: exit %d, %q %q", p.Name, h.name, code, out, errOut)
		}
		if _, _, code := cp.Kubectl("exec", "-n", "agents", p.Name, "--", "sh", "-c", "exit 3"); code != 3 {
			t.Fatalf("kubectl exec exit code: %d, want 3", code)
		}
		out, errOut, code = cp.KubectlIn("line one\nline two\n", "exec", "-i", "-n", "agents", p.Name, "--", "sh", "-c", "cat; echo err >&2")
		if code != 0 || out != "line one\nline two\n" || errOut != "err\n" {
			t.Fatalf("kubectl exec -i %s: exit %d, %q %q", p.Name, code, out, errOut)
		}
		out, code = onTerminal(t, cp.KubectlCmd("exec", "-it", "-n", "agents", p.Name, "--", "sh", "-c", "stty size; tty; exit 7"), nil)
		if code != 7 || !strings.Contains(out, "33 101") || !strings.Contains(out, "/dev/pts/") {
			t.Fatalf("kubectl exec -it %s: exit %d, %q", p.Name, code, out)
		}
		out, errOut, code = cp.Kubectl("logs", "-n", "agents", p.Name)
		if code != 0 || out != "" {
			t.Fatalf("kubectl logs %s (no command): exit %d, %q %q", p.Name, code, out, errOut)
		}
		testKubeletAPIAuth(t, cp, h, p.Name)
	}
}

// testMainProcess: a container's command runs as the sandbox's main
// process (the Pod's matrx.dev/main condition says so); kubectl logs shows
// its output (--tail too); kubectl attach -it reaches its terminal, and its
// exit is on the Pod and in an event while the sandbox keeps running.
func testMainProcess(t *testing.T, cp *kubetest.ControlPlane) {
	ctx := context.Background()
	pods := cp.Admin.CoreV1().Pods("agents")
	p, err := pods.Get(ctx, "agent-00", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sb := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "matrx://")
	// stdout and stderr interleave as the relay reads them: the first two
	// lines come in either order, "last" (written later) after them.
	waitFor(t, "agent-00's logs", 30*time.Second, func() (bool, string) {
		out, errOut, code := cp.Kubectl("logs", "-n", "agents", "agent-00")
		lines := strings.SplitAfter(out, "\n")
		return code == 0 && len(lines) == 4 && lines[2] == "last\n" && lines[3] == "" &&
			slices.Contains(lines[:2], "hello from "+sb+"\n") && slices.Contains(lines[:2], "oops\n"), fmt.Sprintf("exit %d %q %q", code, out, errOut)
	})
	if out, errOut, code := cp.Kubectl("logs", "-n", "agents", "agent-00", "--tail=1"); code != 0 || out != "last\n" {
		t.Fatalf("kubectl logs --tail=1: exit %d %q %q", code, out, errOut)
	}
	if c := condition(t, cp, "agent-00", fleet.ConditionMain); c == nil || c.Status != corev1.ConditionTrue {
		t.Fatalf("agent-00's main condition: %+v", c)
	}

	// agent-01's main process waits on its terminal for a line.
	out, code := onTerminal(t, cp.KubectlCmd("attach", "-it", "-n", "agents", "agent-01"), func(w io.Writer) { io.WriteString(w, "hi there\r") })
	if !strings.Contains(out, "got hi there") || code != 3 {
		t.Fatalf("kubectl attach -it agent-01: exit %d %q", code, out)
	}
	waitFor(t, "agent-01's main exit on the Pod", 30*time.Second, func() (bool, string) {
		c := condition(t, cp, "agent-01", fleet.ConditionMain)
		p, _ := pods.Get(ctx, "agent-01", metav1.GetOptions{})
		return c != nil && c.Status == corev1.ConditionFalse && c.Reason == "Exited" && strings.Contains(c.Message, "exited with 3") &&
			p.Status.Phase == corev1.PodRunning && strings.Contains(podEvents(t, cp, "agents", "agent-01"), "MainExited"), fmt.Sprintf("%+v", c)
	})
}

// condition is one of a Pod's conditions (nil if it has none of type c).
func condition(t *testing.T, cp *kubetest.ControlPlane, pod string, c corev1.PodConditionType) *corev1.PodCondition {
	p, err := cp.Admin.CoreV1().Pods("agents").Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == c {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// onTerminal runs cmd on a new pseudo-terminal of 33 rows and 101
// columns, as a user at a terminal would, calls input with the terminal
// once cmd has printed something, and returns what it printed and its exit
// code.
func onTerminal(t *testing.T, cmd *exec.Cmd, input func(io.Writer)) (string, int) {
	t.Helper()
	master, slave := openPTY(t)
	defer master.Close()
	if err := unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 101}); err != nil {
		t.Fatal(err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var out bytes.Buffer
	var mu sync.Mutex
	read := make(chan struct{})
	first := make(chan struct{})
	go func() {
		defer close(read)
		once := sync.Once{}
		b := make([]byte, 4096)
		for {
			n, err := master.Read(b)
			if n > 0 {
				mu.Lock()
				out.Write(b[:n])
				mu.Unlock()
				once.Do(func() { close(first) })
			}
			if err != nil {
				return
			}
		}
	}()
	if input != nil {
		select {
		case <-first:
			time.Sleep(500 * time.Millisecond) // the attachment is up: kubectl printed its hint
			input(master)
		case <-time.After(30 * time.Second):
		}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		mu.Lock()
		t.Fatalf("%s did not end on its terminal; it printed %q", strings.Join(cmd.Args, " "), out.String())
	}
	<-read
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	return out.String(), code
}

// openPTY returns a new pseudo-terminal's master and slave.
func openPTY(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

// testKubeletAPIAuth: the provider's kubelet API (code execution in every
// sandbox of the host) answers only clients the cluster authorizes: no
// certificate is 401, a certificate of the cluster's CA for a user without
// nodes/proxy is 403, and one of another CA is refused.
func testKubeletAPIAuth(t *testing.T, cp *kubetest.ControlPlane, h *host, pod string) {
	n, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), h.name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/containerLogs/agents/%s/agent", n.Status.DaemonEndpoints.KubeletEndpoint.Port, pod)
	ca, err := os.ReadFile(cp.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	get := func(certs []tls.Certificate) (int, error) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}}
		resp, err := c.Get(url)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(nil); err != nil || code != http.StatusUnauthorized {
		t.Errorf("kubelet API without credentials: %d %v, want 401", code, err)
	}
	certFile, keyFile := cp.Cert("nobody", []string{"nobodies"}, nil, nil, false)
	nobody, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := get([]tls.Certificate{nobody}); err != nil || code != http.StatusForbidden {
		t.Errorf("kubelet API as a user without nodes/proxy: %d %v, want 403", code, err)
	}
	other := selfSignedClient(t)
	if code, err := get([]tls.Certificate{other}); err == nil && code != http.StatusUnauthorized {
		t.Errorf("kubelet API with a certificate of another CA: %d, want refused", code)
	}
}

// selfSignedClient is a client certificate no cluster CA signed, claiming
// system:masters.
func selfSignedClient(t *testing.T) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// testProviderRestart: a provider killed with SIGKILL and started again
// rebuilds its Pods from matrxd: the same sandboxes, no second one for any
// Pod; and the Pods deleted while it was away are destroyed after it
// comes back.
func testProviderRestart(t *testing.T, cp *kubetest.ControlPlane, h *host) {
	ctx := context.Background()
	pods := cp.Admin.CoreV1().Pods("agents")
	list := func() []corev1.Pod {
		l, err := pods.List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", h.name).String()})
		if err != nil {
			t.Fatal(err)
		}
		return l.Items
	}
	before := map[string]string{} // pod → sandbox
	for _, p := range list() {
		before[p.Name] = p.Status.ContainerStatuses[0].ContainerID
	}
	mainBefore, err := h.d.Client().Process(ctx, strings.TrimPrefix(before["agent-00"], "matrx://"), "main")
	if err != nil {
		t.Fatalf("agent-00 (on %s) has no main process: %v", h.name, err)
	}
	h.vk.kill()
	// While it is away, two of its Pods are deleted (they wait, marked).
	var gone []string
	for name := range before {
		if len(gone) == 2 {
			break
		}
		if name == "agent-00" || name == "agent-20" {
			continue
		}
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		gone = append(gone, name)
	}
	h.vk = startProvider(h.vk.t, h.vk.args) // the whole test's: it outlives this subtest
	waitFor(t, "the two deleted Pods gone", 2*time.Minute, func() (bool, string) {
		left := 0
		for _, name := range gone {
			if _, err := pods.Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				left++
			}
		}
		return left == 0, fmt.Sprintf("%d left", left)
	})
	for _, p := range list() {
		if p.DeletionTimestamp != nil {
			continue
		}
		if was, ok := before[p.Name]; ok && p.Status.ContainerStatuses[0].ContainerID != was {
			t.Errorf("Pod %s: sandbox %s after the restart, %s before", p.Name, p.Status.ContainerStatuses[0].ContainerID, was)
		}
	}
	// The main process was not started again.
	procs, err := h.d.Client().Processes(ctx, strings.TrimPrefix(before["agent-00"], "matrx://"))
	if err != nil {
		t.Fatal(err)
	}
	mains := 0
	for _, pr := range procs.Processes {
		if pr.Tag == "main" {
			mains++
			if pr.ProcessID != mainBefore.ProcessID || pr.Status != "running" {
				t.Errorf("agent-00's main process after the restart: %+v, before: %+v", pr, mainBefore)
			}
		}
	}
	if mains != 1 {
		t.Errorf("agent-00 has %d main processes after the restart", mains)
	}
	// Every Pod UID has exactly one sandbox on the host, ever.
	all, err := h.d.Client().List(ctx, "", true)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, sb := range all.Sandboxes {
		uid := sb.Config.Labels["matrx.dev/pod-uid"]
		if uid == "" {
			continue
		}
		if other, dup := seen[uid]; dup {
			t.Errorf("Pod %s has two sandboxes: %s and %s", uid, other, sb.SandboxID)
		}
		seen[uid] = sb.SandboxID
	}
	for _, name := range gone {
		id := strings.TrimPrefix(before[name], "matrx://")
		sb, err := h.d.Client().Get(ctx, id)
		if err != nil || sb.Status != "stopped" || sb.HotSyncedAt == nil || sb.HotSyncPending {
			t.Errorf("sandbox %s of Pod %s deleted while the provider was away: %v %+v", id, name, err, sb)
		}
	}
}

// testDeleteAll: deleting every Pod destroys every sandbox gracefully:
// both hosts are left with no live sandbox, and every sandbox's hot files
// were synced (what exec wrote is in the users' hot storage).
func testDeleteAll(t *testing.T, cp *kubetest.ControlPlane, hosts []*host) {
	ctx := context.Background()
	pods := cp.Admin.CoreV1().Pods("agents")
	if err := pods.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every Pod gone", 3*time.Minute, func() (bool, string) {
		l, err := pods.List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		var left []string
		for _, p := range l.Items {
			left = append(left, fmt.Sprintf("%s on %s: %s %q deleting since %v, containers %+v", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Message, p.DeletionTimestamp, p.Status.ContainerStatuses))
		}
		return len(l.Items) == 0, fmt.Sprintf("%d left:\n%s", len(l.Items), strings.Join(left, "\n"))
	})
	for _, h := range hosts {
		live, err := h.d.Client().List(ctx, "", false)
		if err != nil || len(live.Sandboxes) != 0 {
			t.Fatalf("%s still has live sandboxes: %v %+v", h.name, err, live)
		}
		all, err := h.d.Client().List(ctx, "", true)
		if err != nil {
			t.Fatal(err)
		}
		for _, sb := range all.Sandboxes {
			if sb.Config.Labels["matrx.dev/pod-uid"] == "" || sb.Status == "failed" {
				continue
			}
			if sb.Status != "stopped" || sb.HotSyncedAt == nil || sb.HotSyncPending || sb.StoppedAt == nil || sb.HotSyncedAt.Before(sb.CreatedAt) {
				t.Errorf("%s: sandbox %s after its Pod was deleted: %+v", h.name, sb.SandboxID, sb)
			}
		}
	}
	// What exec wrote into a home reached the user's hot storage.
	found := 0
	for _, h := range hosts {
		for _, user := range []string{"alice", "bob"} {
			st, err := h.d.Client().StorageStats(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			found += int(st.Hot.Objects)
		}
	}
	if found < len(hosts) {
		t.Fatalf("hot storage holds %d objects, want the %d files exec wrote", found, len(hosts))
	}
}

// testSubnetOverlap: a provider whose matrxd uses a sandbox subnet another
// node reports refuses to start, and says why.
func testSubnetOverlap(t *testing.T, cp *kubetest.ControlPlane, h *host) {
	p := startProvider(t, providerArgs(cp, h.d, "matrx-c", 5))
	select {
	case err := <-p.done:
		p.done <- err
		if err == nil || !strings.Contains(p.tail(20), "overlaps this host's "+h.d.Config.Network.Subnet.String()) {
			t.Fatalf("provider on an overlapping subnet: %v\n%s", err, p.tail(20))
		}
	case <-time.After(time.Minute):
		t.Fatalf("a provider on another node's subnet kept running:\n%s", p.tail(20))
	}
	if _, err := cp.Admin.CoreV1().Nodes().Get(context.Background(), "matrx-c", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the refused provider registered its node: %v", err)
	}
}

// testMatrxdDown: stopping a host's matrxd makes its node NotReady, and
// starting it again makes it Ready.
func testMatrxdDown(t *testing.T, cp *kubetest.ControlPlane, h *host) {
	ctx := context.Background()
	h.d.Stop()
	waitFor(t, h.name+" NotReady", 30*time.Second, func() (bool, string) {
		n, err := cp.Admin.CoreV1().Nodes().Get(ctx, h.name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		ready, why := nodeReady(n)
		return !ready && strings.HasPrefix(why, "MatrxdUnavailable"), why
	})
	h.d.Start()
	waitFor(t, h.name+" Ready again", 30*time.Second, func() (bool, string) {
		n, err := cp.Admin.CoreV1().Nodes().Get(ctx, h.name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return nodeReady(n)
	})
}
