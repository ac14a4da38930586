package fleet

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/matrx-dev/matrx/api/apitype"
)

// Names the provider reads and writes on Kubernetes objects.
const (
	// AnnotationUserID on a Pod names the matrx user who owns its sandbox
	// (required).
	AnnotationUserID = "matrx.dev/user-id"
	// AnnotationAllowedUsers on a Namespace lists the user ids its Pods may
	// claim: comma-separated ids, or "*" for any. No annotation: none.
	AnnotationAllowedUsers = "matrx.dev/allowed-users"
	// AnnotationDiskMB on a Pod sets the sandbox's home disk (config.disk_mb).
	AnnotationDiskMB = "matrx.dev/disk-mb"
	// AnnotationNetwork on a Pod is the egress mode, default or none
	// (config.network.mode).
	AnnotationNetwork = "matrx.dev/network"
	// AnnotationNetworkAllow on a Pod is a comma-separated CIDR allow list
	// (config.network.allow: deny by default).
	AnnotationNetworkAllow = "matrx.dev/network-allow"
	// ResourceSandbox is the extended resource of a node's sandbox slots;
	// every Pod requests exactly one.
	ResourceSandbox corev1.ResourceName = "matrx.dev/sandbox"
	// LabelHost on a node names the matrxd host behind it.
	LabelHost = "matrx.dev/host"
	// AnnotationNetworkSubnet on a node is its host's sandbox subnet, so
	// that a provider can refuse to start on a range another node uses.
	AnnotationNetworkSubnet = "matrx.dev/network-subnet"
	// TaintKey and TaintValue: only Pods that tolerate the taint land on a
	// matrx node.
	TaintKey   = "virtual-kubelet.io/provider"
	TaintValue = "matrx"
)

// Labels on every sandbox the provider creates: the Pod it belongs to and
// the node that made it. After a restart the provider rebuilds its pods
// from them (matrxd's records are the truth, not the provider's memory).
const (
	labelPodUID       = "matrx.dev/pod-uid"
	labelPodNamespace = "matrx.dev/pod-namespace"
	labelPodName      = "matrx.dev/pod-name"
	labelNode         = "matrx.dev/node"
)

// sandboxRequest is what a Pod asks of matrxd.
type sandboxRequest struct {
	UserID string
	Config apitype.SandboxConfig
	// Main is the container's command and args; empty: none.
	Main []string
	// WorkingDir is where Main runs (empty: the sandbox's home).
	WorkingDir string
	// MainTTY and MainStdin: Main gets a terminal (the container's tty) or
	// input (its stdin), for kubectl attach.
	MainTTY, MainStdin bool
	// Ignored lists Pod fields the sandbox does not honour, for a warning.
	Ignored []string
}

// rejection is why a Pod cannot become a sandbox: permanent, shown on the
// Pod's status and in a Warning event.
type rejection struct {
	Reason  string
	Message string
}

func (r *rejection) Error() string { return r.Reason + ": " + r.Message }

func reject(format string, args ...any) *rejection {
	return &rejection{Reason: "Rejected", Message: fmt.Sprintf(format, args...)}
}

// serviceAccountVolume reports whether v is the API access volume the
// ServiceAccount admission plugin adds to every Pod (kube-api-access-*). It
// is accepted and never mounted: a sandbox gets no cluster credentials.
func serviceAccountVolume(v corev1.Volume) bool {
	if v.Projected == nil || !strings.HasPrefix(v.Name, "kube-api-access-") {
		return false
	}
	for _, s := range v.Projected.Sources {
		if s.ServiceAccountToken != nil {
			return true
		}
	}
	return false
}

// translate turns a Pod bound to this node into a sandbox request, or says
// why it cannot be one. allowed is the Pod's namespace's
// AnnotationAllowedUsers value (ok false: the namespace has none).
func translate(pod *corev1.Pod, allowed string, allowedSet bool, node string) (*sandboxRequest, *rejection) {
	spec := &pod.Spec
	switch {
	case len(spec.InitContainers) > 0:
		return nil, reject("init containers are not supported: a matrx sandbox runs one container")
	case len(spec.EphemeralContainers) > 0:
		return nil, reject("ephemeral containers are not supported")
	case len(spec.Containers) != 1:
		return nil, reject("a matrx Pod has exactly one container, this one has %d", len(spec.Containers))
	case spec.HostNetwork || spec.HostPID || spec.HostIPC:
		return nil, reject("hostNetwork, hostPID and hostIPC are refused: a sandbox never shares the host's namespaces")
	}
	tokenVolumes := map[string]bool{}
	for _, v := range spec.Volumes {
		if !serviceAccountVolume(v) {
			return nil, reject("volume %q is not supported: a sandbox's storage is its hot home and cold mount (matrx.dev/disk-mb sizes the home)", v.Name)
		}
		tokenVolumes[v.Name] = true
	}
	c := &spec.Containers[0]
	for _, m := range c.VolumeMounts {
		if !tokenVolumes[m.Name] {
			return nil, reject("volume mount %q is not supported", m.Name)
		}
	}
	if len(c.VolumeDevices) > 0 {
		return nil, reject("volume devices are not supported")
	}
	if sc := c.SecurityContext; sc != nil && sc.Privileged != nil && *sc.Privileged {
		return nil, reject("privileged containers are refused: sandboxes keep their hardening")
	}

	user := pod.Annotations[AnnotationUserID]
	if user == "" {
		return nil, reject("annotation %s is required: it names the matrx user whose files the sandbox gets", AnnotationUserID)
	}
	if !allowedSet {
		return nil, reject("namespace %s allows no matrx user: annotate it with %s (comma-separated user ids, or *)", pod.Namespace, AnnotationAllowedUsers)
	}
	if !userAllowed(allowed, user) {
		return nil, reject("namespace %s may not claim user %q (its %s is %q)", pod.Namespace, user, AnnotationAllowedUsers, allowed)
	}
	if got := requested(c, ResourceSandbox); got.Cmp(resource.MustParse("1")) != 0 {
		return nil, reject("the container must request %s: 1 (its sandbox slot; the scheduler counts slots with it), not %s", ResourceSandbox, got.String())
	}

	req := &sandboxRequest{UserID: user, WorkingDir: c.WorkingDir}
	req.Config.Image = c.Image
	if q := limitOrRequest(c, corev1.ResourceCPU); !q.IsZero() {
		req.Config.CPU = float64(q.MilliValue()) / 1000
	}
	if q := limitOrRequest(c, corev1.ResourceMemory); !q.IsZero() {
		req.Config.MemoryMB = (q.Value() + 1<<20 - 1) >> 20
	}
	if d := spec.ActiveDeadlineSeconds; d != nil {
		req.Config.TTLSeconds = *d
	}
	if v, ok := pod.Annotations[AnnotationDiskMB]; ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n <= 0 {
			return nil, reject("annotation %s=%q: want a whole number of MiB", AnnotationDiskMB, v)
		}
		req.Config.DiskMB = n
	}
	mode, allow := pod.Annotations[AnnotationNetwork], pod.Annotations[AnnotationNetworkAllow]
	if mode != "" || allow != "" {
		nc := &apitype.NetworkConfig{Mode: mode}
		if mode != "" && mode != "default" && mode != "none" {
			return nil, reject("annotation %s=%q: want default or none", AnnotationNetwork, mode)
		}
		for _, s := range strings.Split(allow, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			if _, err := netip.ParsePrefix(s); err != nil {
				return nil, reject("annotation %s: %q is not a CIDR", AnnotationNetworkAllow, s)
			}
			nc.Allow = append(nc.Allow, s)
		}
		req.Config.Network = nc
	}
	env, rej := containerEnv(pod, c, node)
	if rej != nil {
		return nil, rej
	}
	req.Config.Env = env
	req.Config.Labels = map[string]string{
		labelPodUID: string(pod.UID), labelPodNamespace: pod.Namespace, labelPodName: pod.Name, labelNode: node,
	}
	req.Main = append(append([]string(nil), c.Command...), c.Args...)
	req.MainTTY, req.MainStdin = c.TTY, c.Stdin
	req.Ignored = ignoredFields(pod, c)
	return req, nil
}

// userAllowed: allowed is "*" or a comma-separated list of user ids.
func userAllowed(allowed, user string) bool {
	for _, a := range strings.Split(allowed, ",") {
		if a = strings.TrimSpace(a); a != "" && (a == "*" || a == user) {
			return true
		}
	}
	return false
}

func requested(c *corev1.Container, name corev1.ResourceName) resource.Quantity {
	if q, ok := c.Resources.Requests[name]; ok {
		return q
	}
	// Extended resources may be given as a limit only (the request then
	// equals it).
	return c.Resources.Limits[name]
}

// limitOrRequest is the sandbox's limit for a resource: the container's
// limit, else its request (a sandbox's limits are hard caps; what the
// scheduler counted is the least it gets).
func limitOrRequest(c *corev1.Container, name corev1.ResourceName) resource.Quantity {
	if q, ok := c.Resources.Limits[name]; ok {
		return q
	}
	return c.Resources.Requests[name]
}

// containerEnv resolves the container's environment the way a kubelet
// does for what a sandbox can honour: literal values with $(VAR)
// expansion, and the downward API's fields. Values from Secrets and
// ConfigMaps are refused: the provider reads neither (least privilege: a
// node must not be able to read every Secret of the cluster).
func containerEnv(pod *corev1.Pod, c *corev1.Container, node string) (map[string]string, *rejection) {
	if len(c.EnvFrom) > 0 {
		return nil, reject("envFrom is not supported: the provider reads no ConfigMaps or Secrets; give values literally")
	}
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = expand(e.Value, env)
			continue
		}
		v, rej := envFrom(pod, c, node, e)
		if rej != nil {
			return nil, rej
		}
		env[e.Name] = v
	}
	if len(env) == 0 {
		return nil, nil
	}
	return env, nil
}

func envFrom(pod *corev1.Pod, c *corev1.Container, node string, e corev1.EnvVar) (string, *rejection) {
	src := e.ValueFrom
	switch {
	case src.SecretKeyRef != nil || src.ConfigMapKeyRef != nil:
		return "", reject("env %s: values from Secrets and ConfigMaps are not supported (the provider reads neither); give the value literally", e.Name)
	case src.FieldRef != nil:
		return fieldValue(pod, node, e.Name, src.FieldRef.FieldPath)
	case src.ResourceFieldRef != nil:
		return resourceValue(c, e.Name, src.ResourceFieldRef)
	}
	return "", reject("env %s: this valueFrom source is not supported", e.Name)
}

func fieldValue(pod *corev1.Pod, node, name, path string) (string, *rejection) {
	if k, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[k], nil
	}
	if k, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[k], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return node, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	}
	return "", reject("env %s: fieldRef %q is not supported (known before the sandbox exists: metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], metadata.annotations['k'], spec.nodeName, spec.serviceAccountName)", name, path)
}

// subscript parses `prefix['key']`.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok || !strings.HasSuffix(rest, "']") {
		return "", false
	}
	return strings.TrimSuffix(rest, "']"), true
}

func resourceValue(c *corev1.Container, name string, ref *corev1.ResourceFieldSelector) (string, *rejection) {
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	var q resource.Quantity
	switch ref.Resource {
	case "limits.cpu", "requests.cpu":
		q = limitOrRequest(c, corev1.ResourceCPU)
		if q.IsZero() {
			return "", reject("env %s: %s needs resources.limits.cpu (the daemon's default is not known here)", name, ref.Resource)
		}
		return strconv.FormatInt((q.MilliValue()+divisor.MilliValue()-1)/divisor.MilliValue(), 10), nil
	case "limits.memory", "requests.memory":
		q = limitOrRequest(c, corev1.ResourceMemory)
		if q.IsZero() {
			return "", reject("env %s: %s needs resources.limits.memory (the daemon's default is not known here)", name, ref.Resource)
		}
		return strconv.FormatInt((q.Value()+divisor.Value()-1)/divisor.Value(), 10), nil
	}
	return "", reject("env %s: resourceFieldRef %q is not supported (limits.cpu, limits.memory)", name, ref.Resource)
}

// expand replaces $(NAME) with the value of an earlier variable, as the
// kubelet does; $$ is a literal $, and an unknown $(NAME) stays as it is.
func expand(s string, env map[string]string) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteByte('$')
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

// ignoredFields are Pod fields a sandbox accepts but does not honour.
func ignoredFields(pod *corev1.Pod, c *corev1.Container) []string {
	var out []string
	add := func(cond bool, what string) {
		if cond {
			out = append(out, what)
		}
	}
	add(len(c.Ports) > 0, "ports (sandboxes accept no inbound connections from other hosts)")
	add(c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil, "probes (a sandbox is ready when matrxd says so)")
	add(c.Lifecycle != nil, "lifecycle hooks")
	add(c.SecurityContext != nil || pod.Spec.SecurityContext != nil && !emptyPodSecurityContext(pod.Spec.SecurityContext), "securityContext (matrx's hardening applies)")
	add((c.Stdin || c.TTY) && len(c.Command)+len(c.Args) == 0, "stdin/tty without a command (there is no main process to attach to)")
	sort.Strings(out)
	return out
}

func emptyPodSecurityContext(sc *corev1.PodSecurityContext) bool {
	return equality.Semantic.DeepEqual(*sc, corev1.PodSecurityContext{})
}
