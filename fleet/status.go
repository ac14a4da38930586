package fleet

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/matrx-dev/matrx/api/apitype"
)

// podView is everything the provider knows about one Pod; its status is a
// function of it alone (the same view gives the same status, so a poll
// that learns nothing new sends the API server nothing).
type podView struct {
	Pod *corev1.Pod
	// Sandbox is matrxd's record; nil before the create answered.
	Sandbox *apitype.Sandbox
	// Rejection, when set, failed the Pod without (or after) a sandbox.
	Rejection *rejection
	// Waiting is why the create is being retried (host full, matrxd away).
	Waiting string
	// Deleted: the provider destroyed the sandbox because the Pod was
	// deleted.
	Deleted bool
	// Lost: matrxd has no record of the sandbox any more.
	Lost   bool
	NodeIP string
	// Main is the container's command and args, run as the background
	// process tagged main (empty: none), in WorkingDir.
	Main       []string
	WorkingDir string
	MainTTY    bool
	MainStdin  bool
	// MainProc is the main process as matrxd last reported it (nil before
	// it started); MainError is why it could not start.
	MainProc  *apitype.Process
	MainError string
}

// ConditionMain is the Pod condition of the main process: True while it
// runs, False once it exited (or could not start), with its exit code. A
// Pod that has it had its main process started, so a restarted provider
// never starts it twice.
const ConditionMain corev1.PodConditionType = "matrx.dev/main"

// Pod phases' reasons, as `kubectl get pods` shows them.
const (
	reasonCreating         = "ContainerCreating"
	reasonDeadlineExceeded = "DeadlineExceeded"
)

// containerID is how a Pod's container status names its sandbox.
func containerID(sandboxID string) string { return "matrx://" + sandboxID }

// status is the Pod status the view implies: Pending while the sandbox is
// made, Running while it accepts work, Succeeded when the agent completed
// (or the Pod was deleted and the sandbox stopped), Failed otherwise, with
// matrx's stop reason.
func (v podView) status() corev1.PodStatus {
	pod, sb := v.Pod, v.Sandbox
	c := pod.Spec.Containers[0]
	created := pod.CreationTimestamp
	st := corev1.PodStatus{QOSClass: pod.Status.QOSClass, StartTime: &created}
	if v.NodeIP != "" {
		st.HostIP = v.NodeIP
		st.HostIPs = []corev1.HostIP{{IP: v.NodeIP}}
	}
	cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
	since := created
	if sb != nil {
		since = metav1.NewTime(sb.CreatedAt)
		st.StartTime = &since
		cs.ContainerID = containerID(sb.SandboxID)
		cs.Image = sb.Image
		if sb.IPAddress != "" {
			st.PodIP = sb.IPAddress
			st.PodIPs = []corev1.PodIP{{IP: sb.IPAddress}}
		}
	}
	ready := false
	switch {
	case v.Rejection != nil:
		st.Phase, st.Reason, st.Message = corev1.PodFailed, v.Rejection.Reason, v.Rejection.Message
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: v.Rejection.Reason, Message: v.Rejection.Message}
	case v.Lost:
		st.Phase, st.Reason, st.Message = corev1.PodFailed, "SandboxLost", "matrxd has no record of sandbox "+sb.SandboxID
		cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "SandboxLost", StartedAt: since, FinishedAt: since}
	case sb == nil || sb.Status == "creating" || sb.Status == "starting":
		st.Phase = corev1.PodPending
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: reasonCreating, Message: v.Waiting}
		st.Message = v.Waiting
	case sb.Status == "ready" || sb.Status == "running":
		st.Phase = corev1.PodRunning
		ready = true
		started := true
		cs.Started = &started
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: since}
	case sb.Status == "shutting_down":
		st.Phase = corev1.PodRunning
		started := true
		cs.Started = &started
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: since}
		st.Message = "the sandbox is stopping (hot files sync before it goes)"
	default: // stopped, failed, expired
		st.Phase, st.Reason, st.Message = terminalPhase(v)
		finished := since
		if sb.StoppedAt != nil {
			finished = metav1.NewTime(*sb.StoppedAt)
		}
		code := int32(0)
		if st.Phase == corev1.PodFailed {
			code = 1
		}
		started := false
		cs.Started = &started
		cs.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: st.Reason, Message: st.Message, StartedAt: since, FinishedAt: finished,
			ContainerID: cs.ContainerID,
		}
		if st.Reason == "" {
			cs.State.Terminated.Reason = "Completed"
		}
	}
	cs.Ready = ready
	st.ContainerStatuses = []corev1.ContainerStatus{cs}
	st.Conditions = conditions(st.Phase, ready, sb != nil, since, created)
	if c, ok := v.mainCondition(); ok {
		st.Conditions = append(st.Conditions, c)
	}
	return st
}

// mainCondition is ConditionMain, when the main process started or failed
// to.
func (v podView) mainCondition() (corev1.PodCondition, bool) {
	c := corev1.PodCondition{Type: ConditionMain}
	switch p := v.MainProc; {
	case v.MainError != "":
		c.Status, c.Reason, c.Message = corev1.ConditionFalse, "StartFailed", v.MainError
		if v.Sandbox != nil {
			c.LastTransitionTime = metav1.NewTime(v.Sandbox.CreatedAt)
		}
	case p == nil:
		return c, false
	case p.Status == "running":
		c.Status, c.Reason, c.LastTransitionTime = corev1.ConditionTrue, "Running", metav1.NewTime(p.StartedAt)
		c.Message = "process " + p.ProcessID
	default:
		c.Status, c.Reason = corev1.ConditionFalse, "Exited"
		code := 0
		if p.ExitCode != nil {
			code = *p.ExitCode
		}
		c.Message = fmt.Sprintf("process %s exited with %d", p.ProcessID, code)
		if p.TimedOut {
			c.Message += " (timed out)"
		}
		c.LastTransitionTime = metav1.NewTime(p.StartedAt)
		if p.EndedAt != nil {
			c.LastTransitionTime = metav1.NewTime(*p.EndedAt)
		}
	}
	return c, true
}

// hadMain reports whether a Pod's status says its main process started.
func hadMain(st corev1.PodStatus) bool {
	for _, c := range st.Conditions {
		if c.Type == ConditionMain {
			return true
		}
	}
	return false
}

// terminalPhase maps a stopped sandbox to a Pod phase, reason and message.
func terminalPhase(v podView) (corev1.PodPhase, string, string) {
	sb := v.Sandbox
	reason := ""
	if sb.StopReason != nil {
		reason = *sb.StopReason
	}
	sync := hotSyncNote(sb)
	switch {
	case v.Deleted:
		return corev1.PodSucceeded, "", "the Pod was deleted; the sandbox stopped" + sync
	case sb.Status == "expired" || reason == "expired":
		return corev1.PodFailed, reasonDeadlineExceeded, "the sandbox reached its TTL (activeDeadlineSeconds)" + sync
	case sb.Status == "stopped" && reason == "graceful_shutdown":
		return corev1.PodSucceeded, "", "the agent signalled complete" + sync
	case sb.Status == "failed" && reason == "error" && sb.Error != "":
		return corev1.PodFailed, "Error", sb.Error + sync
	case reason == "user_requested":
		return corev1.PodFailed, "Deleted", "the sandbox was destroyed outside Kubernetes (matrx rm or DELETE /sandboxes)" + sync
	}
	msg := "the sandbox stopped"
	if reason != "" {
		msg += " (" + reason + ")"
	}
	if sb.Error != "" {
		msg += ": " + sb.Error
	}
	return corev1.PodFailed, "Stopped", msg + sync
}

// hotSyncNote says whether the stopped sandbox's hot files reached the
// bucket.
func hotSyncNote(sb *apitype.Sandbox) string {
	switch {
	case sb.HotSyncPending:
		return "; hot files are still on the host, their sync is retried: " + sb.HotSyncError
	case sb.HotSyncedAt != nil:
		return "; hot files synced at " + sb.HotSyncedAt.UTC().Format(time.RFC3339)
	}
	return ""
}

func conditions(phase corev1.PodPhase, ready, made bool, since, created metav1.Time) []corev1.PodCondition {
	cond := func(t corev1.PodConditionType, ok bool, at metav1.Time) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: at}
	}
	out := []corev1.PodCondition{
		cond(corev1.PodScheduled, true, created),
		cond(corev1.PodInitialized, true, created),
		cond(corev1.PodReadyToStartContainers, made && phase != corev1.PodFailed && phase != corev1.PodSucceeded, since),
		cond(corev1.ContainersReady, ready, since),
		cond(corev1.PodReady, ready, since),
	}
	if !ready {
		for i := range out[3:] {
			out[3+i].Reason = fmt.Sprintf("Sandbox%s", phaseWord(phase))
		}
	}
	return out
}

func phaseWord(p corev1.PodPhase) string {
	switch p {
	case corev1.PodPending:
		return "Creating"
	case corev1.PodRunning:
		return "Stopping"
	}
	return "Stopped"
}
