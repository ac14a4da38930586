package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node"
	vkapi "github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/version"
)

// Run registers the node and serves its Pods until ctx ends. It waits for
// matrxd first (a provider without its daemon has nothing to report), and
// refuses to start when the slot count or the sandbox subnet would give the
// scheduler a wrong picture.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	log = log.With("node", cfg.NodeName)
	ctx = withVKLogger(ctx, log)
	mx := client.New(cfg.Socket, client.WithRetries(2))
	defer mx.Close()
	kube, err := kubeClient(cfg)
	if err != nil {
		return err
	}

	capa, err := waitForMatrxd(ctx, mx, log)
	if err != nil {
		return err
	}
	slots, err := cfg.slots(capa.Slots.Total)
	if err != nil {
		return err
	}
	if err := checkSubnet(ctx, kube.CoreV1().Nodes(), cfg.NodeName, capa.NetworkSubnet); err != nil {
		return err
	}

	eb := record.NewBroadcaster()
	eb.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: kube.CoreV1().Events(corev1.NamespaceAll)})
	defer eb.Shutdown()
	events := eb.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "matrx-vk", Host: cfg.NodeName})

	// Namespaces, for their allowed users. Secrets, ConfigMaps and
	// Services are never listed: Virtual Kubelet's pod controller wants
	// informers for them (to resolve env), which the provider does itself,
	// so it gets ones that are never started.
	nsFactory := informers.NewSharedInformerFactory(kube, 10*time.Minute)
	nsInformer := nsFactory.Core().V1().Namespaces()
	nsLister := nsInformer.Lister()
	nsFactory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nsInformer.Informer().HasSynced) {
		return fmt.Errorf("namespace cache did not sync: %w", ctx.Err())
	}
	unused := informers.NewSharedInformerFactory(kube, 0)

	l, err := net.Listen("tcp", cfg.ListenAddress)
	if err != nil {
		return fmt.Errorf("kubelet API listener: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port

	pods := newProvider(ctx, providerConfig{
		Matrxd: mx, Node: cfg.NodeName, Host: cfg.Host, NodeIP: cfg.NodeIP, Namespaces: nsLister,
		Events: events, Logger: log,
	})
	n, err := pods.rebuild(ctx)
	if err != nil {
		l.Close()
		return err
	}
	log.Info("pods restored from matrxd's records", "pods", n)

	np := &nodeProvider{
		spec: nodeSpec{Name: cfg.NodeName, Host: cfg.Host, IP: cfg.NodeIP, Port: int32(port), Slots: slots, Subnet: capa.NetworkSubnet},
		mx:   mx, pods: pods, events: events, log: log,
	}
	nc, err := node.NewNodeController(np, np.initial(ctx), kube.CoreV1().Nodes(),
		node.WithNodeEnableLeaseV1(nodeutil.NodeLeaseV1Client(kube), node.DefaultLeaseDuration))
	if err != nil {
		l.Close()
		return fmt.Errorf("node controller: %w", err)
	}
	podFactory := informers.NewSharedInformerFactoryWithOptions(kube, time.Minute, nodeutil.PodInformerFilter(cfg.NodeName))
	podInformer := podFactory.Core().V1().Pods()
	pc, err := node.NewPodController(node.PodControllerConfig{
		PodClient: kube.CoreV1(), PodInformer: podInformer, EventRecorder: events, Provider: pods,
		SecretInformer: unused.Core().V1().Secrets(), ConfigMapInformer: unused.Core().V1().ConfigMaps(),
		ServiceInformer: unused.Core().V1().Services(), SkipDownwardAPIResolution: true,
	})
	if err != nil {
		l.Close()
		return fmt.Errorf("pod controller: %w", err)
	}

	stopHTTP, err := serveKubeletAPI(ctx, cfg, kube, l, pods, podInformer.Lister(), log)
	if err != nil {
		l.Close()
		return err
	}
	defer stopHTTP()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	podFactory.Start(ctx.Done())
	go pc.Run(ctx, cfg.Workers)
	select {
	case <-pc.Ready():
	case <-pc.Done():
		return fmt.Errorf("pod controller: %w", pc.Err())
	case <-ctx.Done():
		return nil
	}
	go nc.Run(ctx)
	select {
	case <-nc.Ready():
	case <-nc.Done():
		return fmt.Errorf("node controller: %w", nc.Err())
	case <-ctx.Done():
		return nil
	}
	log.Info("node registered", "slots", slots, "subnet", capa.NetworkSubnet, "kubelet_api", fmt.Sprintf("%s:%d", cfg.NodeIP, port))

	go every(ctx, cfg.StatusInterval, func() { np.refresh(ctx) })
	go every(ctx, cfg.StatusInterval, func() {
		if err := pods.syncStatuses(ctx); err != nil && ctx.Err() == nil {
			log.Debug("sandbox status poll failed", "error", err)
		}
	})
	var runErr error
	select {
	case <-ctx.Done():
	case <-pc.Done():
		runErr = pc.Err()
	case <-nc.Done():
		runErr = nc.Err()
	}
	cancel()
	// Creates in flight finish (matrxd completes keyed creates anyway), so
	// the next start finds ready sandboxes.
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	pods.wait(wctx)
	wcancel()
	<-pc.Done()
	<-nc.Done()
	log.Info("provider stopped; sandboxes keep running")
	return runErr
}

// every runs f each interval until ctx ends.
func every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// kubeClient builds the cluster client from the kubeconfig, or from the
// service account when running in a Pod.
func kubeClient(cfg Config) (kubernetes.Interface, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("cluster credentials: %w", err)
	}
	rc.UserAgent = "matrx-vk/" + version.Version
	rc.QPS, rc.Burst = 50, 100
	return kubernetes.NewForConfig(rc)
}

// waitForMatrxd asks matrxd for its capacity until it answers.
func waitForMatrxd(ctx context.Context, mx *client.Client, log *slog.Logger) (*apitype.Capacity, error) {
	delay := 200 * time.Millisecond
	for {
		c, err := mx.Capacity(ctx)
		if err == nil {
			return c, nil
		}
		log.Warn("waiting for matrxd", "error", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// serveKubeletAPI serves the kubelet API the API server proxies exec, logs
// and attach to. Every request is authenticated (client certificates from
// the cluster's CA, or bearer tokens through TokenReview) and authorized
// with a SubjectAccessReview on this node's nodes/proxy, as a kubelet's
// webhook mode does: the API is code execution in every sandbox of the host.
func serveKubeletAPI(ctx context.Context, cfg Config, kube kubernetes.Interface, l net.Listener, p *Provider, pods interface {
	List(labels.Selector) ([]*corev1.Pod, error)
}, log *slog.Logger) (stop func(), err error) {
	var cert tls.Certificate
	if cfg.TLSCertFile != "" {
		if cert, err = tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return nil, fmt.Errorf("kubelet API certificate: %w", err)
		}
	} else {
		log.Warn("no --tls-cert-file: the kubelet API uses a self-signed certificate (API servers that verify kubelets will refuse it)")
		if cert, err = selfSigned(cfg.NodeName, cfg.NodeIP); err != nil {
			return nil, err
		}
	}
	auth, err := nodeutil.WebhookAuth(kube, cfg.NodeName, func(c *nodeutil.WebhookAuthConfig) error {
		if cfg.ClientCAFile == "" {
			return nil
		}
		ca, err := dynamiccertificates.NewDynamicCAContentFromFile("client-ca", cfg.ClientCAFile)
		if err != nil {
			return fmt.Errorf("--client-ca-file: %w", err)
		}
		c.AuthnConfig.ClientCertificateCAContentProvider = ca
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kubelet API authentication: %w", err)
	}
	mux := http.NewServeMux()
	vkapi.AttachPodRoutes(vkapi.PodHandlerConfig{
		RunInContainer:    p.RunInContainer,
		AttachToContainer: p.AttachToContainer,
		PortForward:       p.PortForward,
		GetContainerLogs:  p.GetContainerLogs,
		GetPods:           p.GetPods,
		GetPodsFromKubernetes: func(context.Context) ([]*corev1.Pod, error) {
			return pods.List(labels.Everything())
		},
		StreamIdleTimeout:     4 * time.Hour,
		StreamCreationTimeout: 30 * time.Second,
	}, mux, false)
	srv := &http.Server{
		Handler:           nodeutil.WithAuth(auth, mux),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	tl := tls.NewListener(l, &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
		// Verified by the authenticator against the client CA, so that a
		// bearer token without a certificate can still authenticate.
		ClientAuth: tls.RequestClientCert,
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(tl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("kubelet API stopped", "error", err)
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		srv.Close()
		<-done
	}, nil
}

// selfSigned makes a throwaway serving certificate for the kubelet API.
func selfSigned(name, ip string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().AddDate(1, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{name},
	}
	if a := net.ParseIP(ip); a != nil {
		tmpl.IPAddresses = []net.IP{a}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed kubelet API certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
