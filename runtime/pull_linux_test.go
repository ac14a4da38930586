package runtime_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
	"github.com/matrx-dev/matrx/runtime/registryauth"
	"github.com/matrx-dev/matrx/runtime/regtest"
	"github.com/matrx-dev/matrx/testenv"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const ecrHost = "123456789012.dkr.ecr.us-east-1.amazonaws.com"

// TestRegistryPull pulls from a real registry (distribution 2.8 with
// htpasswd basic auth) into a private containerd, through every way of
// getting credentials and every way of failing, then runs a sandbox from a
// pulled image in a user namespace and deletes the image. It runs on
// containerd 1.6 and, in make test's second pass, on containerd 2.
func TestRegistryPull(t *testing.T) {
	testenv.BothContainerds(t)
	if ok, why := runtime.DetectUserNS(); !ok {
		containerdtest.Skip(t, "user namespaces unsupported: %s", why)
	}
	alice := regtest.User{Name: "alice", Password: "alice-s3cret-pw"}
	// ECR tokens decode to AWS:<password>; the stand-in hands out this one.
	awsUser := regtest.User{Name: "AWS", Password: "ecr-token-password-0123456789"}
	reg := regtest.Start(t, alice, awsUser)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	writeJSON(t, cfgPath, map[string]any{"auths": map[string]any{
		reg.Host: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(alice.Name + ":" + alice.Password))},
	}})
	ecr := newECRStandIn(t, awsUser.Password)
	clock := &fakeClock{now: time.Now()}
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDMATRXTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "matrx-test-secret-key")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	keys, err := registryauth.New(registryauth.Config{ConfigPath: cfgPath, ECR: registryauth.ECRConfig{Endpoint: ecr.URL, Now: clock.Now}})
	if err != nil {
		t.Fatal(err)
	}
	u, err := runtime.NewUserNS(runtime.DefaultUserNSBase)
	if err != nil {
		t.Fatal(err)
	}
	rt, env := newRuntime(t, runtime.WithUserNS(u), runtime.WithRegistries(runtime.RegistryConfig{
		Keychain:  keys,
		Insecure:  []string{reg.Host},
		Endpoints: map[string]string{ecrHost: "http://" + reg.Host},
	}))
	ctx := context.Background()
	ref := reg.Host + "/team/minimal:1.0"
	pushed := reg.Push(env.ImageTar, "team/minimal:1.0")
	reg.Push(env.ImageTar, "team/minimal:userns")
	reg.Push("oci:"+writeLayout(t, "arm64")+":v1", "team/armonly:v1")
	reg.Push("oci:"+writeLayout(t, "arm64", "s390x")+":v1", "team/multi:v1", "--all")
	broken := writeLayout(t, "amd64")
	reg.Push("oci:"+broken+":v1", "team/broken:v1")
	if os.Getenv("MATRX_TEST_EXPECT_IDMAP") == "1" && !rt.IDMapped() {
		t.Fatal("this containerd should map ids with idmapped mounts")
	}

	// A second runtime with no keychain and no insecure list.
	bare, err := runtime.New(ctx, runtime.Config{Address: env.Address, Namespace: testNS, StateDir: filepath.Join(env.Dir, "bare"), InitPath: env.InitPath})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()

	wantFail := func(t *testing.T, err error, reason runtime.PullReason, parts ...string) {
		t.Helper()
		var pe *runtime.PullError
		if !errors.As(err, &pe) || pe.Reason != reason {
			t.Fatalf("got %v (%T), want a %s pull error", err, err, reason)
		}
		t.Logf("%s: %v", reason, err)
		for _, p := range append(parts, reg.Host) {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("error %q does not mention %q", err, p)
			}
		}
		for _, secret := range []string{alice.Password, awsUser.Password, "wrong-password-xyz", base64.StdEncoding.EncodeToString([]byte("alice:wrong-password-xyz"))} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error leaks a secret: %q", err)
			}
		}
		if errdefs.IsUnauthorized(err) {
			t.Errorf("a registry's refusal must not be errdefs unauthorized (the API's own 401): %v", err)
		}
	}

	t.Run("config.json credentials, with progress", func(t *testing.T) {
		var mu sync.Mutex
		last := map[string]runtime.PullProgress{}
		info, err := rt.Pull(ctx, runtime.PullRequest{Ref: ref, Progress: func(p runtime.PullProgress) {
			mu.Lock()
			last[p.Layer] = p
			mu.Unlock()
		}})
		if err != nil {
			t.Fatal(err)
		}
		if info.Name != ref || info.Digest != pushed {
			t.Fatalf("pulled %+v, want %s at %s", info, ref, pushed)
		}
		if len(last) != 1 {
			t.Fatalf("progress for %d layers, want 1: %v", len(last), last)
		}
		for _, p := range last {
			if p.Total <= 0 || p.Done != p.Total {
				t.Fatalf("last progress %+v, want done == total > 0", p)
			}
		}
		if d, err := rt.ImageDigest(ctx, ref); err != nil || d != pushed {
			t.Fatalf("ImageDigest = %q, %v", d, err)
		}
	})

	t.Run("credentials passed with the call", func(t *testing.T) {
		rm(t, rt, ref)
		_, err := bare.Pull(ctx, runtime.PullRequest{Ref: ref, Auth: &registryauth.Credentials{Username: alice.Name, Password: alice.Password}})
		// bare has no --insecure-registry: the registry speaks plain HTTP.
		wantFail(t, err, runtime.PullUnreachable, "--insecure-registry")
		if _, err := rt.Pull(ctx, runtime.PullRequest{Ref: ref, Auth: &registryauth.Credentials{Username: alice.Name, Password: alice.Password}}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("wrong password: clear error, nothing half-imported", func(t *testing.T) {
		rm(t, rt, ref)
		before := storeState(t, env)
		_, err := rt.Pull(ctx, runtime.PullRequest{Ref: ref, Auth: &registryauth.Credentials{Username: "alice", Password: "wrong-password-xyz"}})
		wantFail(t, err, runtime.PullUnauthorized, "refused the credentials", "passed with the request")
		if after := storeState(t, env); after != before {
			t.Fatalf("store changed by a failed pull:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("a layer the registry lost: nothing half-imported", func(t *testing.T) {
		// The manifest and config arrive; the layer does not.
		layer := layoutLayer(t, broken)
		if err := os.Remove(filepath.Join(reg.Dir, "data", "docker", "registry", "v2", "blobs", "sha256", layer[:2], layer, "data")); err != nil {
			t.Fatal(err)
		}
		before := storeState(t, env)
		_, err := rt.Pull(ctx, runtime.PullRequest{Ref: reg.Host + "/team/broken:v1"})
		wantFail(t, err, runtime.PullFailed, "lacks content")
		if after := storeState(t, env); after != before {
			t.Fatalf("store changed by a failed pull:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("no credentials", func(t *testing.T) {
		withoutCreds := reg.Host + "/team/minimal:userns"
		noKeys, err := runtime.New(ctx, runtime.Config{Address: env.Address, Namespace: testNS, StateDir: filepath.Join(env.Dir, "nokeys"), InitPath: env.InitPath},
			runtime.WithRegistries(runtime.RegistryConfig{Insecure: []string{reg.Host}}))
		if err != nil {
			t.Fatal(err)
		}
		defer noKeys.Close()
		_, err = noKeys.Pull(ctx, runtime.PullRequest{Ref: withoutCreds})
		wantFail(t, err, runtime.PullUnauthorized, "without credentials")
	})

	t.Run("missing tag", func(t *testing.T) {
		_, err := rt.Pull(ctx, runtime.PullRequest{Ref: reg.Host + "/team/minimal:nope"})
		wantFail(t, err, runtime.PullNotFound, "team/minimal:nope")
		if !errdefs.IsNotFound(err) {
			t.Fatalf("not found is not errdefs NotFound: %v", err)
		}
	})

	t.Run("wrong platform", func(t *testing.T) {
		before := storeState(t, env)
		_, err := rt.Pull(ctx, runtime.PullRequest{Ref: reg.Host + "/team/armonly:v1"})
		wantFail(t, err, runtime.PullPlatform, "linux/amd64", "linux/arm64")
		if after := storeState(t, env); after != before {
			t.Fatalf("store changed by a failed pull:\nbefore %s\nafter  %s", before, after)
		}
		// A multi-platform index without linux/amd64 lists what it has.
		_, err = rt.Pull(ctx, runtime.PullRequest{Ref: reg.Host + "/team/multi:v1"})
		wantFail(t, err, runtime.PullPlatform, "linux/amd64", "linux/arm64, linux/s390x")
		if after := storeState(t, env); after != before {
			t.Fatalf("store changed by a failed pull:\nbefore %s\nafter  %s", before, after)
		}
		if info, err := rt.Pull(ctx, runtime.PullRequest{Ref: reg.Host + "/team/multi:v1", Platform: "linux/s390x"}); err != nil {
			t.Fatal(err)
		} else {
			rm(t, rt, info.Name)
		}
		// Asked for explicitly, it is there.
		if _, err := rt.Pull(ctx, runtime.PullRequest{Ref: reg.Host + "/team/armonly:v1", Platform: "linux/arm64"}); err != nil {
			t.Fatal(err)
		}
		rm(t, rt, reg.Host+"/team/armonly:v1")
	})

	t.Run("credential helper", func(t *testing.T) {
		bin := filepath.Join(dir, "bin")
		os.MkdirAll(bin, 0o755)
		script := fmt.Sprintf("#!/bin/sh\nread host\n[ \"$1\" = get ] && [ \"$host\" = %q ] || { echo 'credentials not found in native keychain'; exit 1; }\nprintf '{\"ServerURL\":\"%%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}' \"$host\"\n", reg.Host, alice.Name, alice.Password)
		os.WriteFile(filepath.Join(bin, "docker-credential-matrxtest"), []byte(script), 0o755)
		t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
		helperCfg := filepath.Join(dir, "helper.json")
		writeJSON(t, helperCfg, map[string]any{"credHelpers": map[string]string{reg.Host: "matrxtest"}})
		hk, err := registryauth.New(registryauth.Config{ConfigPath: helperCfg})
		if err != nil {
			t.Fatal(err)
		}
		hrt, err := runtime.New(ctx, runtime.Config{Address: env.Address, Namespace: testNS, StateDir: filepath.Join(env.Dir, "helper"), InitPath: env.InitPath},
			runtime.WithRegistries(runtime.RegistryConfig{Keychain: hk, Insecure: []string{reg.Host}}))
		if err != nil {
			t.Fatal(err)
		}
		defer hrt.Close()
		rm(t, rt, ref)
		if _, err := hrt.Pull(ctx, runtime.PullRequest{Ref: ref}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ECR token through the SDK, cached until shortly before expiry", func(t *testing.T) {
		ecrRef := ecrHost + "/team/minimal:1.0"
		if _, err := rt.Pull(ctx, runtime.PullRequest{Ref: ecrRef}); err != nil {
			t.Fatalf("%v\nregistry log:\n%s", err, tailLines(reg.Log(), 20))
		}
		if n := ecr.calls.Load(); n != 1 {
			t.Fatalf("%d GetAuthorizationToken calls, want 1", n)
		}
		if d, err := rt.ImageDigest(ctx, ecrRef); err != nil || d != pushed {
			t.Fatalf("ECR image digest %q, %v", d, err)
		}
		// Later, within the token's life: the cached token is used.
		rm(t, rt, ecrRef)
		clock.add(11 * time.Hour)
		if _, err := rt.Pull(ctx, runtime.PullRequest{Ref: ecrRef}); err != nil {
			t.Fatal(err)
		}
		if n := ecr.calls.Load(); n != 1 {
			t.Fatalf("%d GetAuthorizationToken calls after 11 h, want 1 (cached)", n)
		}
		// 12 h minus 20 min: inside the refresh window, a new token.
		rm(t, rt, ecrRef)
		clock.add(40 * time.Minute)
		if _, err := rt.Pull(ctx, runtime.PullRequest{Ref: ecrRef}); err != nil {
			t.Fatal(err)
		}
		if n := ecr.calls.Load(); n != 2 {
			t.Fatalf("%d GetAuthorizationToken calls 20 min before expiry, want 2 (refreshed)", n)
		}
		if !ecr.signed.Load() {
			t.Fatal("the ECR stand-in never saw a SigV4 request signed with the environment's key")
		}
		rm(t, rt, ecrRef)
	})

	t.Run("run a pulled image in a user namespace, then delete it", func(t *testing.T) {
		img := reg.Host + "/team/minimal:userns"
		if _, err := rt.Pull(ctx, runtime.PullRequest{Ref: img}); err != nil {
			t.Fatal(err)
		}
		home := filepath.Join(env.Dir, "pulled-home")
		os.MkdirAll(home, 0o755)
		os.Chown(home, int(u.HostID(runtime.AgentUID)), int(u.HostID(runtime.AgentGID)))
		id := "sbx-0000000c0ffe"
		if err := rt.Create(ctx, runtime.CreateRequest{ID: id, UserID: "u", Image: img,
			Resources: runtime.Resources{CPU: 1, MemoryBytes: 256 << 20, Pids: 64},
			Mounts:    []runtime.Mount{{Source: home, Destination: "/home/agent", Slave: true}}, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		res := run(t, rt, id, runtime.ExecRequest{Command: "id -u; cat /proc/self/uid_map"})
		if !strings.HasPrefix(string(res.Stdout), "1000\n") || !strings.Contains(string(res.Stdout), fmt.Sprint(runtime.DefaultUserNSBase)) {
			t.Fatalf("inside the pulled image: %q", res.Stdout)
		}
		if inUse, err := rt.ImagesInUse(ctx); err != nil || len(inUse[img]) != 1 || inUse[img][0] != id {
			t.Fatalf("ImagesInUse = %v, %v", inUse, err)
		}
		if err := rt.DeleteImage(ctx, img); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), id) {
			t.Fatalf("delete of an image in use: %v, want FailedPrecondition naming %s", err, id)
		}
		if err := rt.Destroy(ctx, id, 0); err != nil {
			t.Fatal(err)
		}
		if err := rt.DeleteImage(ctx, img); err != nil {
			t.Fatal(err)
		}
		if _, err := rt.ImageDigest(ctx, img); !errdefs.IsNotFound(err) {
			t.Fatalf("image still there after delete: %v", err)
		}
		if err := rt.DeleteImage(ctx, img); !errdefs.IsNotFound(err) {
			t.Fatalf("second delete: %v, want NotFound", err)
		}
		// The image minimal:1.0 shares the layers, so the user-namespace
		// copy (containerd 1.6) stays for it; once no image has them it goes.
		rm(t, rt, ref)
		rm(t, rt, containerdtest.MinimalImage)
		if names := snapshotNames(t, env); strings.Contains(names, "matrx-userns-") {
			t.Fatalf("user-namespace copy left after its last image was deleted: %s", names)
		}
	})

	t.Run("registry down", func(t *testing.T) {
		reg.Stop()
		_, err := rt.Pull(ctx, runtime.PullRequest{Ref: ref})
		wantFail(t, err, runtime.PullUnreachable, "unreachable", "connection refused")
	})
}

// rm deletes an image if it is there.
func rm(t *testing.T, rt *runtime.Runtime, name string) {
	t.Helper()
	if err := rt.DeleteImage(context.Background(), name); err != nil && !errdefs.IsNotFound(err) {
		t.Fatal(err)
	}
}

// storeState lists what a pull could leave behind in the test namespace:
// images, content, snapshots, leases and ingests.
func storeState(t *testing.T, env *containerdtest.Env) string {
	t.Helper()
	c, err := containerd.New(env.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), testNS)
	var parts []string
	imgs, _ := c.ImageService().List(ctx)
	for _, i := range imgs {
		parts = append(parts, "image:"+i.Name)
	}
	c.ContentStore().Walk(ctx, func(i content.Info) error { parts = append(parts, "blob:"+i.Digest.String()[7:19]); return nil })
	sts, _ := c.ContentStore().ListStatuses(ctx)
	for _, s := range sts {
		parts = append(parts, "ingest:"+s.Ref)
	}
	ls, _ := c.LeasesService().List(ctx)
	for _, l := range ls {
		parts = append(parts, "lease:"+l.ID)
	}
	parts = append(parts, snapshotNames(t, env))
	return strings.Join(parts, " ")
}

func snapshotNames(t *testing.T, env *containerdtest.Env) string {
	t.Helper()
	c, err := containerd.New(env.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), testNS)
	var names []string
	c.SnapshotService("overlayfs").Walk(ctx, func(_ context.Context, i snapshots.Info) error {
		names = append(names, "snapshot:"+i.Name)
		return nil
	})
	return strings.Join(names, " ")
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// writeLayout writes an OCI image layout tagged v1 for skopeo to push: one
// tiny image for linux/arch, or, with several arches, an index of one
// image each.
func writeLayout(t *testing.T, arches ...string) string {
	t.Helper()
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs", "sha256")
	os.MkdirAll(blobs, 0o755)
	put := func(b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644)
		return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
	}
	var mans []ocispec.Descriptor
	for _, arch := range arches {
		md := writeImage(put, arch)
		md.Platform = &ocispec.Platform{OS: "linux", Architecture: arch}
		mans = append(mans, md)
	}
	top := mans[0]
	if len(mans) > 1 {
		inner, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: mans})
		top = put(inner)
		top.MediaType = ocispec.MediaTypeImageIndex
	}
	top.Annotations = map[string]string{ocispec.AnnotationRefName: "v1"}
	idx, _ := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{top}})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return dir
}

// writeImage stores one single-layer image for linux/arch through put and
// returns its manifest's descriptor.
func writeImage(put func([]byte) ocispec.Descriptor, arch string) ocispec.Descriptor {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	body := []byte("an image for " + arch + "\n")
	tw.WriteHeader(&tar.Header{Name: "hello", Mode: 0o644, Size: int64(len(body))})
	tw.Write(body)
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	layer := put(gz.Bytes())
	layer.MediaType = ocispec.MediaTypeImageLayerGzip
	cfg, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: arch},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(tarBuf.Bytes())}}})
	cd := put(cfg)
	cd.MediaType = ocispec.MediaTypeImageConfig
	man, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cd, Layers: []ocispec.Descriptor{layer}})
	md := put(man)
	md.MediaType = ocispec.MediaTypeImageManifest
	return md
}

// layoutLayer returns the hex digest of the only layer in a layout made by
// writeLayout.
func layoutLayer(t *testing.T, dir string) string {
	t.Helper()
	var idx ocispec.Index
	b, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	json.Unmarshal(b, &idx)
	b, _ = os.ReadFile(filepath.Join(dir, "blobs", "sha256", idx.Manifests[0].Digest.Encoded()))
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil || len(m.Layers) != 1 {
		t.Fatalf("layout manifest: %v", err)
	}
	return m.Layers[0].Digest.Encoded()
}

// fakeClock is the ECR token cache's clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// ecrStandIn answers ecr:GetAuthorizationToken (the awsJson1.1 protocol
// the SDK speaks) with a token for AWS:password, valid 12 hours from the
// real time of the first call.
type ecrStandIn struct {
	*httptest.Server
	calls  atomic.Int32
	signed atomic.Bool
}

func newECRStandIn(t *testing.T, password string) *ecrStandIn {
	s := &ecrStandIn{}
	start := time.Now()
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("X-Amz-Target") != "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken" {
			http.Error(w, `{"__type":"UnknownOperationException"}`, http.StatusBadRequest)
			return
		}
		if strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKIDMATRXTEST/") &&
			strings.Contains(r.Header.Get("Authorization"), "/us-east-1/ecr/aws4_request") {
			s.signed.Store(true)
		}
		s.calls.Add(1)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		fmt.Fprintf(w, `{"authorizationData":[{"authorizationToken":%q,"expiresAt":%d,"proxyEndpoint":"https://%s"}]}`,
			base64.StdEncoding.EncodeToString([]byte("AWS:"+password)), start.Add(12*time.Hour).Unix(), ecrHost)
	}))
	t.Cleanup(s.Close)
	return s
}
