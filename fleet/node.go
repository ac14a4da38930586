package fleet

import (
	"context"
	"fmt"
	"net/netip"
	goruntime "runtime"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/version"
)

// hostInfo is what the node's status needs of matrxd (api/client's Client).
type hostInfo interface {
	Health(ctx context.Context) (*apitype.Health, error)
	Version(ctx context.Context) (*apitype.Version, error)
	Capacity(ctx context.Context) (*apitype.Capacity, error)
	Images(ctx context.Context) (*apitype.ImageList, error)
}

// hostFacts is what the node status is made of, read from matrxd.
type hostFacts struct {
	Capacity   *apitype.Capacity
	Images     []apitype.Image
	Containerd string // containerd's version
	// Down is why matrxd or containerd cannot run sandboxes; empty: ready.
	Down       string
	DownReason string
}

// nodeSpec is the node's fixed part: name, labels, taint, addresses.
type nodeSpec struct {
	Name   string
	Host   string
	IP     string
	Port   int32
	Slots  int
	Subnet string
}

// baseNode is the Node object the provider registers.
func (s nodeSpec) baseNode() *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: s.Name,
			Labels: map[string]string{
				"type":                   "virtual-kubelet",
				"kubernetes.io/hostname": s.Name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     goruntime.GOARCH,
				LabelHost:                s.Host,
			},
			Annotations: map[string]string{},
		},
		Spec: corev1.NodeSpec{
			Taints: []corev1.Taint{{Key: TaintKey, Value: TaintValue, Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	if s.Subnet != "" {
		n.Annotations[AnnotationNetworkSubnet] = s.Subnet
	}
	return n
}

// status is the node's status given what matrxd says. since is when the
// Ready condition last changed.
func (s nodeSpec) status(f hostFacts, own ownUsage, since metav1.Time) corev1.NodeStatus {
	slots := int64(s.Slots)
	var cpu, mem int64
	var foreignSlots, foreignCPU, foreignMem int64
	if c := f.Capacity; c != nil {
		cpu = int64(c.CPU.Total * 1000)
		mem = c.MemoryMB.Total
		foreignSlots = max(0, c.Slots.Allocated-int64(own.Slots))
		foreignCPU = max(0, int64((c.CPU.Allocated-own.CPU)*1000))
		foreignMem = max(0, c.MemoryMB.Allocated-own.MemoryMB)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(cpu, resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(mem<<20, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(slots, resource.DecimalSI),
		ResourceSandbox:       *resource.NewQuantity(slots, resource.DecimalSI),
	}
	// What sandboxes the scheduler did not place hold (made with the CLI,
	// or by a provider before this one) is not allocatable.
	free := max(0, slots-foreignSlots)
	allocatable := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(max(0, cpu-foreignCPU), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(max(0, mem-foreignMem)<<20, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(free, resource.DecimalSI),
		ResourceSandbox:       *resource.NewQuantity(free, resource.DecimalSI),
	}
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "MatrxdReady",
		Message: "matrxd and containerd run sandboxes", LastTransitionTime: since}
	phase := corev1.NodeRunning
	if f.Down != "" {
		ready.Status, ready.Reason, ready.Message = corev1.ConditionFalse, f.DownReason, f.Down
	}
	cond := func(t corev1.NodeConditionType, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg, LastTransitionTime: since}
	}
	st := corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: allocatable,
		Phase:       phase,
		Conditions: []corev1.NodeCondition{
			ready,
			cond(corev1.NodeMemoryPressure, "NoPressure", "sandboxes have memory limits"),
			cond(corev1.NodeDiskPressure, "NoPressure", "sandboxes have disk quotas"),
			cond(corev1.NodePIDPressure, "NoPressure", "sandboxes have pids limits"),
			cond(corev1.NodeNetworkUnavailable, "SandboxBridge", "matrxd's sandbox bridge"),
		},
		Addresses:       []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: s.Host}},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: s.Port}},
		NodeInfo: corev1.NodeSystemInfo{
			OperatingSystem: "linux", Architecture: goruntime.GOARCH,
			KubeletVersion:          "matrx-vk/" + version.Version,
			ContainerRuntimeVersion: "containerd://" + f.Containerd,
		},
		Images: nodeImages(f.Images),
	}
	if s.IP != "" {
		st.Addresses = append([]corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: s.IP}}, st.Addresses...)
	}
	return st
}

// ownUsage is what the node's own Pods hold.
type ownUsage struct {
	Slots    int
	CPU      float64
	MemoryMB int64
}

// maxNodeImages caps node.status.images the way the kubelet does (50).
const maxNodeImages = 50

// nodeImages lists the host's images for the scheduler's image locality:
// names (a name cannot be a label value) with name@digest, largest first.
func nodeImages(imgs []apitype.Image) []corev1.ContainerImage {
	out := make([]corev1.ContainerImage, 0, len(imgs))
	for _, i := range imgs {
		names := []string{i.Name}
		if i.Digest != "" {
			names = append(names, repository(i.Name)+"@"+i.Digest)
		}
		out = append(out, corev1.ContainerImage{Names: names, SizeBytes: i.Size})
	}
	sort.SliceStable(out, func(a, b int) bool { return out[a].SizeBytes > out[b].SizeBytes })
	if len(out) > maxNodeImages {
		out = out[:maxNodeImages]
	}
	return out
}

// repository strips the tag (not a port) from an image name.
func repository(name string) string {
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		return name[:i]
	}
	return name
}

// nodeProvider is Virtual Kubelet's NodeProvider: Ping answers for the
// provider itself (a failing Ping would stop all status updates, so the
// node could never say NotReady); the node's health is matrxd's, pushed
// through NotifyNodeStatus whenever it changes.
type nodeProvider struct {
	spec   nodeSpec
	mx     hostInfo
	pods   *Provider
	events record.EventRecorder
	log    interface {
		Info(msg string, args ...any)
		Warn(msg string, args ...any)
	}

	mu     sync.Mutex
	notify func(*corev1.Node)
	last   *corev1.Node
	ready  bool
	since  metav1.Time
}

func (n *nodeProvider) Ping(context.Context) error { return nil }

func (n *nodeProvider) NotifyNodeStatus(_ context.Context, f func(*corev1.Node)) {
	n.mu.Lock()
	n.notify = f
	n.mu.Unlock()
}

// facts asks matrxd for its health, capacity and images.
func facts(ctx context.Context, mx hostInfo) hostFacts {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var f hostFacts
	h, err := mx.Health(ctx)
	if err != nil {
		f.Down, f.DownReason = "matrxd does not answer: "+err.Error(), "MatrxdUnavailable"
		return f
	}
	if h.Status != "healthy" {
		f.Down, f.DownReason = "containerd does not answer: "+h.ContainerdStatus, "ContainerdUnavailable"
		return f
	}
	if f.Capacity, err = mx.Capacity(ctx); err != nil {
		f.Down, f.DownReason = "matrxd capacity: "+err.Error(), "MatrxdUnavailable"
		return f
	}
	if imgs, err := mx.Images(ctx); err == nil {
		f.Images = imgs.Images
	}
	if v, err := mx.Version(ctx); err == nil {
		f.Containerd = v.Containerd
	}
	return f
}

// initial is the node to register: the first health check decides whether
// it starts Ready.
func (n *nodeProvider) initial(ctx context.Context) *corev1.Node {
	node := n.spec.baseNode()
	f := facts(ctx, n.mx)
	n.ready, n.since = f.Down == "", metav1.Now()
	node.Status = n.spec.status(f, n.own(), n.since)
	n.last = node.DeepCopy()
	return node
}

func (n *nodeProvider) own() ownUsage {
	s, c, m := n.pods.usage()
	return ownUsage{Slots: s, CPU: c, MemoryMB: m}
}

// refresh recomputes the node's status and pushes it when it changed; a
// Ready change also records an event. (A node may not change its own
// taints under the Node authorizer's NodeRestriction; the cluster's node
// lifecycle controller taints a NotReady node.)
func (n *nodeProvider) refresh(ctx context.Context) {
	f := facts(ctx, n.mx)
	ready := f.Down == ""
	n.mu.Lock()
	changed := ready != n.ready
	if changed {
		n.ready, n.since = ready, metav1.Now()
	}
	node := n.last.DeepCopy()
	node.Status = n.spec.status(f, n.own(), n.since)
	notify := n.notify
	same := equality.Semantic.DeepEqual(node.Status, n.last.Status)
	n.last = node.DeepCopy()
	n.mu.Unlock()
	if changed {
		ref := &corev1.ObjectReference{Kind: "Node", Name: n.spec.Name, UID: "", APIVersion: "v1"}
		if ready {
			n.log.Info("node ready: matrxd answers")
			n.events.Event(ref, corev1.EventTypeNormal, "NodeReady", "matrxd and containerd answer")
		} else {
			n.log.Warn("node not ready", "reason", f.Down)
			n.events.Event(ref, corev1.EventTypeWarning, "NodeNotReady", f.Down)
		}
	}
	if !same && notify != nil {
		notify(node)
	}
}

// checkSubnet refuses a sandbox subnet that overlaps another matrx node's:
// Pod IPs must be unique in the cluster.
func checkSubnet(ctx context.Context, nodes corev1client.NodeInterface, self, subnet string) error {
	if subnet == "" {
		return nil
	}
	mine, err := netip.ParsePrefix(subnet)
	if err != nil {
		return fmt.Errorf("matrxd reports sandbox subnet %q: %w", subnet, err)
	}
	l, err := nodes.List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list nodes to check sandbox subnets: %w", err)
	}
	for _, n := range l.Items {
		if n.Name == self {
			continue
		}
		other, err := netip.ParsePrefix(n.Annotations[AnnotationNetworkSubnet])
		if err != nil {
			continue
		}
		if other.Overlaps(mine) {
			return fmt.Errorf("node %s's host uses sandbox subnet %s, which overlaps this host's %s: Pod IPs would collide; give each matrxd its own --network-subnet", n.Name, other, mine)
		}
	}
	return nil
}
