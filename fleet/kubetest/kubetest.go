// Package kubetest runs a real Kubernetes control plane for a test: etcd,
// kube-apiserver and kube-scheduler, the binaries bootstrap/tools.sh builds
// into build/tools/kube (k8s.io/kubernetes and etcd's embed package at
// pinned versions, cached outside the clone). There is no
// kube-controller-manager: what it would make that tests need (a
// namespace's default ServiceAccount) the harness makes.
//
// Everything is private to the test and on loopback: a data dir under
// t.TempDir(), free ports, and one certificate authority generated here
// with crypto/x509 that signs the API server's serving certificate, every
// client certificate (users are authenticated by certificate: CN is the
// user, O the groups), the API server's kubelet client certificate, and
// the providers' kubelet API serving certificates (which the API server
// verifies, --kubelet-certificate-authority). Service account tokens are
// signed with a key made here too. It is test support only; production
// code must not import it.
package kubetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/matrx-dev/matrx/testenv"
)

// ControlPlane is one running etcd, API server and scheduler.
type ControlPlane struct {
	// Dir holds data, certificates, kubeconfigs and logs.
	Dir string
	// URL is the API server's https URL.
	URL string
	// CAFile is the one CA of the cluster (PEM).
	CAFile string
	// Admin is a client in system:masters.
	Admin kubernetes.Interface
	// AdminKubeconfig is a kubeconfig file for the same user.
	AdminKubeconfig string

	t      testing.TB
	tools  string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial atomic.Int64
	procs  []*proc
}

// Dir where bootstrap/tools.sh links the control-plane binaries.
func toolsDir() string {
	if d := os.Getenv("MATRX_TEST_KUBE_DIR"); d != "" {
		return d
	}
	_, file, _, _ := goruntime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "build", "tools", "kube")
}

// Start runs a control plane for t and stops it when t ends. Without the
// binaries the test is skipped (it fails under MATRX_REQUIRE_INTEGRATION=1).
func Start(t testing.TB) *ControlPlane {
	t.Helper()
	cp := &ControlPlane{t: t, tools: toolsDir(), Dir: t.TempDir()}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-scheduler", "kubectl"} {
		if _, err := os.Stat(filepath.Join(cp.tools, b)); err != nil {
			testenv.Skip(t, "%s not built (run make tools, bootstrap/tools.sh): %v", b, err)
		}
	}
	cp.serial.Store(1)
	var err error
	if cp.ca, cp.caKey, err = newCA(); err != nil {
		t.Fatal(err)
	}
	cp.CAFile = cp.path("ca.crt")
	cp.writePEM(cp.CAFile, "CERTIFICATE", cp.ca.Raw)
	t.Cleanup(cp.stop)

	etcdClient, etcdPeer := freePort(t), freePort(t)
	cp.run("etcd", "--data-dir", cp.path("etcd"), "--name", "test",
		"--listen-client-urls", "http://"+etcdClient, "--listen-peer-urls", "http://"+etcdPeer)
	waitHTTP(t, "etcd", "http://"+etcdClient+"/health", nil, 60*time.Second, cp)

	apiPort := freePort(t)
	cp.URL = "https://" + apiPort
	serving, servingKey := cp.Cert("kube-apiserver", nil, []string{"127.0.0.1"}, []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}, true)
	kubeletClient, kubeletClientKey := cp.Cert("kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil, false)
	saKey, saPub := cp.serviceAccountKeys()
	_, port, _ := net.SplitHostPort(apiPort)
	cp.run("kube-apiserver",
		"--etcd-servers=http://"+etcdClient,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+port,
		"--tls-cert-file="+serving, "--tls-private-key-file="+servingKey,
		"--client-ca-file="+cp.CAFile,
		// As a real cluster: nodes (the providers) are scoped to
		// their own Node, Lease and Pods.
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		// It taints every new node not-ready until kube-controller-
		// manager's node lifecycle controller sees it Ready and lifts
		// the taint; no controller manager runs here.
		"--disable-admission-plugins=TaintNodesByCondition",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-cluster-ip-range=10.96.0.0/24",
		// On loopback, the kubernetes Service's endpoints cannot be
		// reconciled (a loopback address is not a valid endpoint).
		"--endpoint-reconciler-type=none",
		"--kubelet-client-certificate="+kubeletClient, "--kubelet-client-key="+kubeletClientKey,
		"--kubelet-certificate-authority="+cp.CAFile,
		"--kubelet-preferred-address-types=InternalIP",
		"--cert-dir="+cp.path("apiserver-certs"),
		"--profiling=false", "--v=1",
	)
	cp.AdminKubeconfig = cp.Kubeconfig("admin", "system:masters")
	rc, err := clientcmd.BuildConfigFromFlags("", cp.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	rc.QPS, rc.Burst = 100, 200
	if cp.Admin, err = kubernetes.NewForConfig(rc); err != nil {
		t.Fatal(err)
	}
	tr, err := rest.TransportFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	waitHTTP(t, "kube-apiserver", cp.URL+"/readyz", &http.Client{Transport: tr}, 3*time.Minute, cp)

	cp.run("kube-scheduler", "--kubeconfig="+cp.Kubeconfig("system:kube-scheduler"),
		"--leader-elect=false", "--secure-port=0", "--v=1")
	return cp
}

func (cp *ControlPlane) path(name string) string { return filepath.Join(cp.Dir, name) }

// Kubeconfig writes a kubeconfig for user (in groups), authenticated by a
// client certificate of the cluster's CA, and returns its path.
func (cp *ControlPlane) Kubeconfig(user string, groups ...string) string {
	cert, key := cp.Cert(user, groups, nil, nil, false)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthority: cp.CAFile}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificate: cert, ClientKey: key}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: user}
	cfg.CurrentContext = "test"
	p := cp.path("kubeconfig-" + safe(user))
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		cp.t.Fatal(err)
	}
	return p
}

// Cert issues a certificate of the cluster's CA: a client certificate for
// user in groups, or (server) a serving certificate for the IPs and DNS
// names. It returns the certificate and key files.
func (cp *ControlPlane) Cert(cn string, groups, ips, dns []string, server bool) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		cp.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(cp.serial.Add(1)), Subject: pkix.Name{CommonName: cn, Organization: groups},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames: dns,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, cp.ca, &key.PublicKey, cp.caKey)
	if err != nil {
		cp.t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		cp.t.Fatal(err)
	}
	name := safe(cn) + "-" + fmt.Sprint(tmpl.SerialNumber)
	certFile, keyFile = cp.path(name+".crt"), cp.path(name+".key")
	cp.writePEM(certFile, "CERTIFICATE", der)
	cp.writePEM(keyFile, "EC PRIVATE KEY", kb)
	return certFile, keyFile
}

// serviceAccountKeys makes the key pair service account tokens are signed
// with.
func (cp *ControlPlane) serviceAccountKeys() (keyFile, pubFile string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		cp.t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		cp.t.Fatal(err)
	}
	keyFile, pubFile = cp.path("sa.key"), cp.path("sa.pub")
	cp.writePEM(keyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key))
	cp.writePEM(pubFile, "PUBLIC KEY", pub)
	return keyFile, pubFile
}

func (cp *ControlPlane) writePEM(path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		cp.t.Fatal(err)
	}
}

func newCA() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "matrx-test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	return ca, key, err
}

// Namespace creates a namespace with annotations, and its default
// ServiceAccount (kube-controller-manager would make it; without it the
// ServiceAccount admission plugin refuses every Pod).
func (cp *ControlPlane) Namespace(name string, annotations map[string]string) {
	cp.t.Helper()
	ctx := context.Background()
	_, err := cp.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		cp.t.Fatalf("create namespace %s: %v", name, err)
	}
	_, err = cp.Admin.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		cp.t.Fatalf("create the default service account of %s: %v", name, err)
	}
}

// Kubectl runs the kubectl built with the control plane as the admin and
// returns stdout, stderr and the exit code.
func (cp *ControlPlane) Kubectl(args ...string) (string, string, int) {
	return cp.KubectlIn("", args...)
}

// KubectlCmd is the kubectl command line as the admin, for tests that
// give it a terminal.
func (cp *ControlPlane) KubectlCmd(args ...string) *exec.Cmd {
	return exec.Command(filepath.Join(cp.tools, "kubectl"), append([]string{"--kubeconfig", cp.AdminKubeconfig}, args...)...)
}

// KubectlIn is Kubectl with stdin as its input.
func (cp *ControlPlane) KubectlIn(stdin string, args ...string) (string, string, int) {
	cmd := cp.KubectlCmd(args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		cp.t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		err = <-done
		cp.t.Errorf("kubectl %s did not end in 2 minutes (killed)", strings.Join(args, " "))
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		cp.t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// proc is one control-plane process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan error
}

// run starts a control-plane binary with its output in DIR/NAME.log.
func (cp *ControlPlane) run(name string, args ...string) {
	cp.t.Helper()
	logPath := cp.path(name + ".log")
	f, err := os.Create(logPath)
	if err != nil {
		cp.t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(cp.tools, name), args...)
	cmd.Stdout, cmd.Stderr = f, f
	// No Pdeathsig: it fires when the forking OS thread ends, and Go
	// ends threads under goroutines that locked them (network namespace
	// work does), killing the process mid-test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		cp.t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	cp.procs = append(cp.procs, p)
}

// stop ends the processes, newest first, and shows their logs' tails if
// the test failed.
func (cp *ControlPlane) stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		p := cp.procs[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	if cp.t.Failed() {
		for _, p := range cp.procs {
			cp.t.Logf("%s log (tail):\n%s", p.name, tail(p.log, 30))
		}
	}
}

// Exited reports a control-plane process that is no longer running.
func (cp *ControlPlane) exited() string {
	for _, p := range cp.procs {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Sprintf("%s exited (%v):\n%s", p.name, err, tail(p.log, 30))
		default:
		}
	}
	return ""
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t testing.TB, what, url string, c *http.Client, timeout time.Duration, cp *ControlPlane) {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if msg := cp.exited(); msg != "" {
			t.Fatalf("%s is not coming up: %s", what, msg)
		}
		resp, err := c.Get(url)
		if err == nil {
			b := new(bytes.Buffer)
			b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b.String())
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s not ready after %v: %s", what, timeout, last)
}

// freePort returns a loopback HOST:PORT nothing listens on right now.
func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func safe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, s)
}
