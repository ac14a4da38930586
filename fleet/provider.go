package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	vkerrdefs "github.com/virtual-kubelet/virtual-kubelet/errdefs"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
)

// Provider turns the Pods bound to its node into sandboxes of its host's
// matrxd. It implements Virtual Kubelet's PodLifecycleHandler (and
// PodNotifier: statuses are pushed as matrxd's records change) and the
// kubelet API's exec and logs.
type Provider struct {
	mx         *client.Client
	node       string
	host       string
	nodeIP     string
	namespaces corev1listers.NamespaceLister
	events     record.EventRecorder
	log        *slog.Logger
	// createTimeout bounds one create call (an image pull is the long part).
	createTimeout time.Duration

	mu     sync.Mutex
	pods   map[string]*podState // by namespace/name
	notify func(*corev1.Pod)
	bg     sync.WaitGroup // creates in flight
	ctx    context.Context
}

// podState is one Pod the provider holds.
type podState struct {
	key string
	// view holds the Pod (spec as last given, no status), the sandbox and
	// what happened; guarded by Provider.mu.
	view podView
	// creating is closed when the background create ends (nil if none ran).
	creating chan struct{}
	// stop is closed when the Pod is deleted: a create still retrying gives up.
	stop     chan struct{}
	deleting bool
	// restored: rebuilt from matrxd's records after a restart; view.Pod is
	// a stub (namespace, name, UID) until Virtual Kubelet hands over the
	// Pod itself (UpdatePod, DeletePod), and nothing is published for it.
	restored bool
	// mainStarted: the main process was started (by this provider, or
	// before a restart, as the Pod's ConditionMain says); it is never
	// started again.
	mainStarted bool
	// deleteMu serialises deletes of this Pod (Virtual Kubelet may repeat one).
	deleteMu sync.Mutex
	// pubMu orders this Pod's status notifications; last is the last one
	// sent, so an unchanged view sends nothing.
	pubMu sync.Mutex
	last  *corev1.PodStatus
}

func podKey(namespace, name string) string { return namespace + "/" + name }

// newProvider builds a provider; rebuild fills it from matrxd's records.
func newProvider(ctx context.Context, cfg providerConfig) *Provider {
	return &Provider{
		mx: cfg.Matrxd, node: cfg.Node, host: cfg.Host, nodeIP: cfg.NodeIP, namespaces: cfg.Namespaces,
		events: cfg.Events, log: cfg.Logger, createTimeout: 30 * time.Minute,
		pods: map[string]*podState{}, ctx: ctx,
	}
}

type providerConfig struct {
	Matrxd     *client.Client
	Node       string
	Host       string
	NodeIP     string
	Namespaces corev1listers.NamespaceLister
	Events     record.EventRecorder
	Logger     *slog.Logger
}

// rebuild loads the sandboxes this node made from matrxd (their labels
// name the Pod), so that a restarted provider knows every Pod it already
// runs: Virtual Kubelet then neither creates them again nor leaks the ones
// whose Pod is gone (it deletes those at start).
func (p *Provider) rebuild(ctx context.Context) (int, error) {
	l, err := p.mx.List(ctx, "", false)
	if err != nil {
		return 0, fmt.Errorf("list matrxd's sandboxes: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for i := range l.Sandboxes {
		sb := &l.Sandboxes[i]
		lb := sb.Config.Labels
		if lb[labelNode] != p.node || lb[labelPodUID] == "" || lb[labelPodNamespace] == "" || lb[labelPodName] == "" {
			continue
		}
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: lb[labelPodNamespace], Name: lb[labelPodName], UID: types.UID(lb[labelPodUID])},
			Spec:       corev1.PodSpec{NodeName: p.node, Containers: []corev1.Container{{Name: "sandbox", Image: sb.Image}}},
		}
		key := podKey(pod.Namespace, pod.Name)
		if old := p.pods[key]; old != nil && old.view.Sandbox != nil && old.view.Sandbox.CreatedAt.After(sb.CreatedAt) {
			continue // two records for one name: keep the newer Pod's
		}
		p.pods[key] = &podState{key: key, view: podView{Pod: pod, Sandbox: sb, NodeIP: p.nodeIP}, stop: make(chan struct{}), restored: true}
		n++
	}
	return n, nil
}

// NotifyPods registers Virtual Kubelet's status callback.
func (p *Provider) NotifyPods(_ context.Context, f func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = f
	p.mu.Unlock()
}

// CreatePod starts making the Pod's sandbox and returns: the create runs in
// the background (an image pull may take minutes), with the Pod UID as its
// Idempotency-Key, so no crash or retry ever makes two. A Pod that cannot
// be a sandbox fails at once with a Warning event saying why.
func (p *Provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	pod = pod.DeepCopy()
	pod.Status = corev1.PodStatus{QOSClass: pod.Status.QOSClass}
	key := podKey(pod.Namespace, pod.Name)
	p.mu.Lock()
	if old := p.pods[key]; old != nil {
		if old.view.Pod.UID == pod.UID {
			p.adopt(old, pod)
			p.mu.Unlock()
			p.publish(old)
			p.ensureMain(ctx, old)
			return nil
		}
		p.mu.Unlock()
		// The name is reused by a new Pod: the old one's sandbox goes first.
		if err := p.DeletePod(ctx, old.view.Pod); err != nil && !vkerrdefs.IsNotFound(err) {
			return err
		}
		p.mu.Lock()
	}
	st := &podState{key: key, view: podView{Pod: pod, NodeIP: p.nodeIP}, stop: make(chan struct{})}
	p.pods[key] = st
	p.mu.Unlock()

	allowed, allowedSet, err := p.allowedUsers(pod.Namespace)
	if err != nil {
		return err // the namespace cache is not there yet: retried
	}
	req, rej := translate(pod, allowed, allowedSet, p.node)
	if rej != nil {
		p.mu.Lock()
		st.view.Rejection = rej
		p.mu.Unlock()
		p.log.Warn("pod rejected", "namespace", pod.Namespace, "pod", pod.Name, "reason", rej.Message)
		p.publish(st)
		return nil
	}
	p.mu.Lock()
	st.view.Main, st.view.WorkingDir, st.view.MainTTY, st.view.MainStdin = req.Main, req.WorkingDir, req.MainTTY, req.MainStdin
	p.mu.Unlock()
	if len(req.Ignored) > 0 {
		p.events.Eventf(pod, corev1.EventTypeWarning, "Ignored", "a matrx sandbox does not honour: %s", strings.Join(req.Ignored, "; "))
	}
	st.creating = make(chan struct{})
	p.publish(st)
	p.bg.Add(1)
	go p.create(st, req)
	return nil
}

// allowedUsers reads the namespace's AnnotationAllowedUsers.
func (p *Provider) allowedUsers(namespace string) (string, bool, error) {
	ns, err := p.namespaces.Get(namespace)
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("namespace %s: %w", namespace, err)
	}
	v, ok := ns.Annotations[AnnotationAllowedUsers]
	return v, ok, nil
}

// create makes the sandbox, retrying what may pass (a full host, matrxd
// restarting) until the Pod is deleted; a refusal fails the Pod.
func (p *Provider) create(st *podState, req *sandboxRequest) {
	defer p.bg.Done()
	defer close(st.creating)
	pod := st.view.Pod
	log := p.log.With("namespace", pod.Namespace, "pod", pod.Name, "pod_uid", string(pod.UID), "user_id", req.UserID)
	delay := 500 * time.Millisecond
	for {
		select {
		case <-st.stop:
			return
		default:
		}
		// Not the provider's context: a create cut half-way by our own
		// shutdown would only make the retry after the restart slower.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), p.createTimeout)
		sb, err := p.mx.Create(ctx, req.UserID, &req.Config, client.WithIdempotencyKey(string(pod.UID)))
		cancel()
		switch {
		case err == nil:
			log.Info("sandbox ready for pod", "sandbox_id", sb.SandboxID, "ip", sb.IPAddress)
			p.mu.Lock()
			st.view.Sandbox, st.view.Waiting = sb, ""
			p.mu.Unlock()
			p.publish(st)
			p.ensureMain(p.ctx, st)
			return
		case permanent(err):
			log.Warn("matrxd refused the pod's sandbox", "error", err)
			p.mu.Lock()
			st.view.Rejection = &rejection{Reason: "CreateFailed", Message: "matrxd refused the sandbox: " + err.Error() + fieldLegend}
			p.mu.Unlock()
			p.publish(st)
			return
		}
		log.Info("sandbox create will be retried", "error", err, "in", delay)
		p.mu.Lock()
		st.view.Waiting = err.Error()
		p.mu.Unlock()
		p.publish(st)
		select {
		case <-st.stop:
			return
		case <-p.ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// fieldLegend says which Pod field each of matrxd's config fields comes
// from, for refusals that name the config field.
const fieldLegend = " (config.image: the container's image; config.cpu and config.memory_mb: its resources.limits, else requests; " +
	"config.ttl_seconds: spec.activeDeadlineSeconds; config.disk_mb: " + AnnotationDiskMB + "; config.network: " +
	AnnotationNetwork + " and " + AnnotationNetworkAllow + "; user_id: " + AnnotationUserID + ")"

// permanent reports whether matrxd's answer to a create will not change
// on a retry: bad input, an unknown image, a key bound elsewhere.
func permanent(err error) bool {
	return errdefs.IsInvalidArgument(err) || errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) ||
		errdefs.IsPermissionDenied(err)
}

// UpdatePod records the Pod's new spec. A sandbox's configuration is fixed
// at create, so a change of image, resources or deadline is not applied
// (a Warning event says so); labels and annotations need nothing.
func (p *Provider) UpdatePod(ctx context.Context, pod *corev1.Pod) error {
	key := podKey(pod.Namespace, pod.Name)
	p.mu.Lock()
	st := p.pods[key]
	if st == nil {
		p.mu.Unlock()
		return p.CreatePod(ctx, pod)
	}
	if st.view.Pod.UID != pod.UID {
		p.mu.Unlock()
		return p.CreatePod(ctx, pod) // a new Pod of the same name
	}
	old, restored := st.view.Pod, st.restored
	if restored {
		p.adopt(st, pod)
	} else {
		np := pod.DeepCopy()
		np.Status = corev1.PodStatus{QOSClass: pod.Status.QOSClass}
		st.view.Pod = np
	}
	p.mu.Unlock()
	if !restored && specChanged(old, pod) {
		p.events.Eventf(pod, corev1.EventTypeWarning, "UpdateNotApplied", "a sandbox's image, resources, command and deadline are fixed when it is created; delete and recreate the Pod to change them")
	}
	p.publish(st)
	p.ensureMain(ctx, st)
	return nil
}

// adopt gives a state restored from matrxd's records its Pod, as Virtual
// Kubelet hands it over, with what the Pod's status says happened before
// the restart. Called with p.mu held.
func (p *Provider) adopt(st *podState, pod *corev1.Pod) {
	np := pod.DeepCopy()
	np.Status = corev1.PodStatus{QOSClass: pod.Status.QOSClass}
	if st.restored && len(np.Spec.Containers) == 1 {
		c := np.Spec.Containers[0]
		st.view.Main = append(append([]string(nil), c.Command...), c.Args...)
		st.view.WorkingDir, st.view.MainTTY, st.view.MainStdin = c.WorkingDir, c.TTY, c.Stdin
		st.mainStarted = st.mainStarted || hadMain(pod.Status)
	}
	st.view.Pod, st.restored = np, false
}

// ensureMain starts the Pod's main process (its container's command and
// args, tagged main) once its sandbox accepts work, unless it was started
// before (by this provider or, as the Pod's status says, before a restart)
// or matrxd already runs one. It is started at most once: a Pod's command
// is not restarted.
func (p *Provider) ensureMain(ctx context.Context, st *podState) {
	p.mu.Lock()
	v := st.view
	if len(v.Main) == 0 || st.mainStarted || st.restored || st.deleting || v.Sandbox == nil ||
		(v.Sandbox.Status != "ready" && v.Sandbox.Status != "running") {
		p.mu.Unlock()
		return
	}
	st.mainStarted = true
	p.mu.Unlock()
	id := v.Sandbox.SandboxID
	proc, err := p.mx.Process(ctx, id, mainTag)
	if errdefs.IsNotFound(err) {
		req := apitype.ProcessRequest{Command: quoteArgv(v.Main), Tag: mainTag, Stdin: v.MainStdin}
		if v.MainTTY {
			req.PTY = &apitype.PTYSize{Rows: 24, Cols: 80}
		}
		if v.WorkingDir != "" {
			wd := v.WorkingDir
			req.Cwd = &wd
		}
		proc, err = p.mx.StartProcess(ctx, id, req)
	}
	p.mu.Lock()
	switch {
	case err == nil:
		st.view.MainProc, st.view.MainError = proc, ""
	case errdefs.IsUnavailable(err) || errdefs.IsResourceExhausted(err):
		st.mainStarted = false // matrxd away, or too many processes: the next poll tries again
	default:
		st.view.MainError = "the main process could not start: " + err.Error()
	}
	p.mu.Unlock()
	if err != nil {
		p.log.Warn("main process not started", "namespace", v.Pod.Namespace, "pod", v.Pod.Name, "sandbox_id", id, "error", err)
	}
	p.publish(st)
}

func specChanged(a, b *corev1.Pod) bool {
	ca, cb := a.Spec.Containers[0], b.Spec.Containers[0]
	return ca.Image != cb.Image || !ptrEqual(a.Spec.ActiveDeadlineSeconds, b.Spec.ActiveDeadlineSeconds) ||
		!equalStrings(ca.Command, cb.Command) || !equalStrings(ca.Args, cb.Args) ||
		!ca.Resources.Limits.Cpu().Equal(*cb.Resources.Limits.Cpu()) || !ca.Resources.Limits.Memory().Equal(*cb.Resources.Limits.Memory())
}

func ptrEqual(a, b *int64) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// DeletePod destroys the Pod's sandbox gracefully: its processes get
// matrxd's shutdown grace, and the hot files are synced to the bucket
// before the sandbox goes (matrxd's DELETE with graceful=true). It then
// reports the Pod terminated, which lets Virtual Kubelet remove it.
func (p *Provider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	key := podKey(pod.Namespace, pod.Name)
	p.mu.Lock()
	st := p.pods[key]
	p.mu.Unlock()
	if st == nil {
		return vkerrdefs.NotFoundf("pod %s is not on this node", key)
	}
	st.deleteMu.Lock()
	defer st.deleteMu.Unlock()
	p.mu.Lock()
	if p.pods[key] != st {
		p.mu.Unlock()
		return nil // deleted meanwhile by an earlier call
	}
	if !st.deleting {
		st.deleting = true
		close(st.stop)
	}
	if st.restored && !pod.CreationTimestamp.IsZero() {
		p.adopt(st, pod) // deleted while the provider was away: now the Pod is known
	}
	p.mu.Unlock()
	if st.creating != nil {
		select { // a create in flight finishes (matrxd runs a keyed create to the end anyway)
		case <-st.creating:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	p.mu.Lock()
	sb := st.view.Sandbox
	p.mu.Unlock()
	if sb != nil {
		final, err := p.destroy(ctx, sb.SandboxID)
		if err != nil {
			return err
		}
		p.mu.Lock()
		st.view.Sandbox, st.view.Deleted = final, true
		p.mu.Unlock()
	}
	p.mu.Lock()
	delete(p.pods, key)
	p.mu.Unlock()
	p.publish(st)
	return nil
}

// destroy stops a sandbox gracefully and returns its final record. A
// sandbox still being created (after a restart) is waited for.
func (p *Provider) destroy(ctx context.Context, id string) (*apitype.Sandbox, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	delay := 200 * time.Millisecond
	for {
		err := p.mx.Delete(ctx, id, true)
		if err == nil || errdefs.IsNotFound(err) {
			break
		}
		if !errdefs.IsFailedPrecondition(err) && !errdefs.IsUnavailable(err) {
			return nil, fmt.Errorf("destroy sandbox %s: %w", id, err)
		}
		select { // still being created, or matrxd restarting
		case <-ctx.Done():
			return nil, fmt.Errorf("destroy sandbox %s: %w", id, err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
	final, err := p.mx.Get(ctx, id)
	if errdefs.IsNotFound(err) {
		return &apitype.Sandbox{SandboxID: id, Status: "stopped"}, nil
	}
	return final, err
}

// GetPod returns the Pod as this node runs it.
func (p *Provider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	key := podKey(namespace, name)
	p.mu.Lock()
	st := p.pods[key]
	var v podView
	if st != nil {
		v = st.view
	}
	p.mu.Unlock()
	if st == nil {
		return nil, vkerrdefs.NotFoundf("pod %s is not on this node", key)
	}
	pod := v.Pod.DeepCopy()
	pod.Status = v.status()
	return pod, nil
}

// GetPodStatus returns the Pod's status.
func (p *Provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods returns every Pod this node holds.
func (p *Provider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	views := make([]podView, 0, len(p.pods))
	for _, st := range p.pods {
		views = append(views, st.view)
	}
	p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(views))
	for _, v := range views {
		pod := v.Pod.DeepCopy()
		pod.Status = v.status()
		out = append(out, pod)
	}
	sort.Slice(out, func(i, j int) bool {
		return podKey(out[i].Namespace, out[i].Name) < podKey(out[j].Namespace, out[j].Name)
	})
	return out, nil
}

// publish sends the Pod's status to Virtual Kubelet when it changed, with
// an event for each transition.
func (p *Provider) publish(st *podState) {
	st.pubMu.Lock()
	defer st.pubMu.Unlock()
	p.mu.Lock()
	v, restored := st.view, st.restored
	notify := p.notify
	p.mu.Unlock()
	if restored {
		return
	}
	status := v.status()
	if st.last != nil && equalStatus(*st.last, status) {
		return
	}
	prev := st.last
	st.last = &status
	p.transitionEvent(v, prev, status)
	if notify != nil {
		pod := v.Pod.DeepCopy()
		pod.Status = status
		notify(pod)
	}
}

// transitionEvent records what changed between two statuses of a Pod.
func (p *Provider) transitionEvent(v podView, prev *corev1.PodStatus, now corev1.PodStatus) {
	pod := v.Pod
	p.mainEvent(v, prev, now)
	cs := now.ContainerStatuses[0]
	was := corev1.ContainerStatus{}
	if prev != nil {
		was = prev.ContainerStatuses[0]
	}
	switch {
	case v.Rejection != nil:
		if prev == nil || prev.Reason != now.Reason {
			p.events.Event(pod, corev1.EventTypeWarning, v.Rejection.Reason, v.Rejection.Message)
		}
	case cs.State.Waiting != nil:
		switch {
		case was.State.Waiting == nil:
			p.events.Eventf(pod, corev1.EventTypeNormal, "Creating", "creating a sandbox for user %s on host %s (image %s)", pod.Annotations[AnnotationUserID], p.host, pod.Spec.Containers[0].Image)
		case cs.State.Waiting.Message != "" && cs.State.Waiting.Message != was.State.Waiting.Message:
			p.events.Eventf(pod, corev1.EventTypeWarning, "CreateRetrying", "matrxd could not create the sandbox yet, retrying: %s", cs.State.Waiting.Message)
		}
	case cs.State.Running != nil:
		switch {
		case now.Phase == corev1.PodRunning && cs.Ready && (was.State.Running == nil || !was.Ready):
			p.events.Eventf(pod, corev1.EventTypeNormal, "Started", "sandbox %s ready on host %s (ip %s)", v.Sandbox.SandboxID, p.host, orNone(v.Sandbox.IPAddress))
		case !cs.Ready && was.Ready:
			p.events.Eventf(pod, corev1.EventTypeNormal, "Stopping", "sandbox %s is stopping", v.Sandbox.SandboxID)
		}
	case cs.State.Terminated != nil:
		if was.State.Terminated != nil && prev.Phase == now.Phase {
			return
		}
		switch {
		case v.Deleted:
			typ := corev1.EventTypeNormal
			if v.Sandbox.HotSyncPending {
				typ = corev1.EventTypeWarning
			}
			p.events.Eventf(pod, typ, "Deleted", "sandbox %s destroyed%s", v.Sandbox.SandboxID, hotSyncNote(v.Sandbox))
		case now.Phase == corev1.PodSucceeded:
			p.events.Event(pod, corev1.EventTypeNormal, "Completed", now.Message)
		default:
			p.events.Event(pod, corev1.EventTypeWarning, now.Reason, now.Message)
		}
	}
}

// mainEvent records the main process's start, exit or failure.
func (p *Provider) mainEvent(v podView, prev *corev1.PodStatus, now corev1.PodStatus) {
	find := func(st *corev1.PodStatus) *corev1.PodCondition {
		if st == nil {
			return nil
		}
		for i := range st.Conditions {
			if st.Conditions[i].Type == ConditionMain {
				return &st.Conditions[i]
			}
		}
		return nil
	}
	was, c := find(prev), find(&now)
	if c == nil || was != nil && was.Status == c.Status && was.Reason == c.Reason {
		return
	}
	switch c.Reason {
	case "Running":
		p.events.Eventf(v.Pod, corev1.EventTypeNormal, "MainStarted", "started the container's command as the main process: %s", quoteArgv(v.Main))
	case "Exited":
		typ := corev1.EventTypeNormal
		if v.MainProc != nil && (v.MainProc.ExitCode == nil || *v.MainProc.ExitCode != 0) {
			typ = corev1.EventTypeWarning
		}
		p.events.Event(v.Pod, typ, "MainExited", "the main "+c.Message+"; the sandbox keeps running")
	default:
		p.events.Event(v.Pod, corev1.EventTypeWarning, "MainFailed", c.Message)
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// syncStatuses polls matrxd for the sandboxes of live Pods and publishes
// what changed: a sandbox that completed, failed, expired or was removed
// outside Kubernetes ends its Pod.
func (p *Provider) syncStatuses(ctx context.Context) error {
	l, err := p.mx.List(ctx, "", false)
	if err != nil {
		return err
	}
	live := make(map[string]*apitype.Sandbox, len(l.Sandboxes))
	for i := range l.Sandboxes {
		live[l.Sandboxes[i].SandboxID] = &l.Sandboxes[i]
	}
	p.mu.Lock()
	var watch []*podState
	for _, st := range p.pods {
		if sb := st.view.Sandbox; sb != nil && !st.deleting && !st.view.Lost && !terminal(sb.Status) {
			watch = append(watch, st)
		}
	}
	p.mu.Unlock()
	for _, st := range watch {
		id := st.view.Sandbox.SandboxID
		sb, lost := live[id], false
		if sb == nil {
			var err error
			if sb, err = p.mx.Get(ctx, id); errdefs.IsNotFound(err) {
				sb, lost = nil, true
			} else if err != nil {
				return err
			}
		}
		p.mu.Lock()
		if st.deleting {
			p.mu.Unlock()
			continue
		}
		if lost {
			st.view.Lost = true
		} else {
			st.view.Sandbox = sb
		}
		main := st.view.MainProc
		p.mu.Unlock()
		if main != nil && main.Status == "running" && !lost {
			if proc, err := p.mx.Process(ctx, id, main.ProcessID); err == nil {
				p.mu.Lock()
				st.view.MainProc = proc
				p.mu.Unlock()
			}
		}
		p.publish(st)
		p.ensureMain(ctx, st)
	}
	return nil
}

func terminal(status string) bool {
	return status == "stopped" || status == "failed" || status == "expired"
}

// usage is what this node's live Pods hold (for allocatable: what other
// sandboxes on the host hold is not the scheduler's to place).
func (p *Provider) usage() (slots int, cpu float64, memoryMB int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.pods {
		if sb := st.view.Sandbox; sb != nil && !terminal(sb.Status) {
			slots++
			cpu += sb.Config.CPU
			memoryMB += sb.Config.MemoryMB
		}
	}
	return slots, cpu, memoryMB
}

// wait blocks until the creates in flight have ended or ctx ends.
func (p *Provider) wait(ctx context.Context) {
	done := make(chan struct{})
	go func() { p.bg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// errPodNotRunning says a Pod has no sandbox that accepts work.
var errPodNotRunning = errors.New("the pod's sandbox is not running")

// running returns the sandbox of a Pod that accepts exec.
func (p *Provider) running(namespace, name, container string) (*apitype.Sandbox, error) {
	key := podKey(namespace, name)
	p.mu.Lock()
	st := p.pods[key]
	var v podView
	restored := false
	if st != nil {
		v, restored = st.view, st.restored
	}
	p.mu.Unlock()
	switch {
	case st == nil:
		return nil, vkerrdefs.NotFoundf("pod %s is not on this node", key)
	case container != "" && !restored && container != v.Pod.Spec.Containers[0].Name:
		return nil, vkerrdefs.NotFoundf("pod %s has no container %q", key, container)
	case v.Sandbox == nil || (v.Sandbox.Status != "ready" && v.Sandbox.Status != "running"):
		return nil, vkerrdefs.InvalidInputf("pod %s: %v", key, errPodNotRunning)
	}
	return v.Sandbox, nil
}

func equalStatus(a, b corev1.PodStatus) bool { return equality.Semantic.DeepEqual(a, b) }
