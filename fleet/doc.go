// Package fleet is matrx-vk, the Kubernetes provider of a matrxd host: it
// registers the host as one node through Virtual Kubelet, so that
// kube-scheduler places sandboxes across hosts with its usual tools
// (capacity, the matrx.dev/sandbox extended resource, selectors, taints,
// priorities), and it runs the Pods bound to that node as sandboxes of the
// host's matrxd. Each host keeps its own matrxd, images and storage;
// docs/fleet.md draws the whole picture.
//
// It talks to matrxd through api/client only, and owns no sandbox state:
// matrxd's records are the truth. Decisions recorded here:
//   - One Pod is one sandbox, created with Idempotency-Key = the Pod's UID
//     (matrxd finishes a keyed create whose caller went away), so a crash
//     or a retry never makes two. Sandbox labels name the Pod and the node
//     (matrx.dev/pod-uid, -namespace, -name, matrx.dev/node); a restarted
//     provider rebuilds its Pods from them before Virtual Kubelet starts.
//   - Creates run in the background (an image pull can take minutes); the
//     Pod is Pending until matrxd answers, Running while the sandbox is
//     ready or running, Succeeded when the agent completed (or the Pod was
//     deleted), Failed with matrx's stop reason otherwise. matrxd is polled
//     (--status-interval) for what changes on its own: completion, errors,
//     TTLs, removal outside Kubernetes.
//   - A Pod must carry matrx.dev/user-id, and its namespace's
//     matrx.dev/allowed-users must allow that id ("*" or a list; no
//     annotation allows none): creating a Pod is never a way into another
//     tenant's files. One container, no init containers, no volumes but
//     the ServiceAccount's token volume, which is not mounted (a sandbox
//     gets no cluster credentials).
//   - The provider reads no Secrets or ConfigMaps (Virtual Kubelet would
//     list every one in the cluster to resolve env): env is literal values
//     and the downward API, resolved here; valueFrom a Secret or ConfigMap
//     is refused with an event.
//   - Node health is matrxd's: Ping always succeeds (a failing Ping stops
//     Virtual Kubelet's status updates, so the node could never say
//     NotReady); matrxd or containerd down makes the Ready condition False
//     (the cluster's node lifecycle controller then taints the node: under
//     NodeRestriction a node may not change its own taints). The Lease is
//     renewed while the provider runs, as a kubelet's is while its runtime
//     is down.
//   - Its intended identity is a node's, system:node:<node> in
//     system:nodes: the Node authorizer and NodeRestriction then scope it
//     to its own Node, Lease and Pods; it needs one more right, reading
//     Namespaces (bootstrap/fleet/rbac.yaml).
//   - The kubelet API (exec, logs) authenticates like a kubelet in webhook
//     mode: client certificates of --client-ca-file or TokenReview, then a
//     SubjectAccessReview on nodes/proxy.
//
// It must not import the daemon's packages (sandbox, runtime, registry,
// mounts, api's server); and matrxd and api/client must not link it or
// Kubernetes (archtest).
package fleet
