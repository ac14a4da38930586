package doctor_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/matrx-dev/matrx/doctor"
	"github.com/matrx-dev/matrx/hostconfig"
	"github.com/matrx-dev/matrx/mounts/s3test"
	"github.com/matrx-dev/matrx/runtime"
	"github.com/matrx-dev/matrx/runtime/containerdtest"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// TestRealHost runs every check on this machine against a private
// containerd holding the minimal image in namespace matrx.
func TestRealHost(t *testing.T) {
	env := containerdtest.Start(t, "matrx")
	ctx := context.Background()
	rt, err := runtime.New(ctx, runtime.Config{
		Address: env.Address, Namespace: "matrx",
		StateDir: filepath.Join(env.Dir, "matrx"), InitPath: env.InitPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(env.ImageTar)
	if err != nil {
		t.Fatal(err)
	}
	names, err := rt.Import(ctx, f)
	f.Close()
	rt.Close()
	if err != nil || len(names) != 1 || names[0] != containerdtest.MinimalImage {
		t.Fatalf("import: %v %v", err, names)
	}

	rep := doctor.Run(ctx, doctor.Config{
		ContainerdAddress: env.Address, ContainerdNamespace: "matrx",
		StateDir: filepath.Join(env.Dir, "state"), Socket: filepath.Join(env.Dir, "matrxd.sock"),
		Image: containerdtest.MinimalImage,
	})
	for _, r := range rep.Checks {
		t.Logf("%-5s %-17s %s", r.Status, r.Check, r.Detail)
	}
	want := map[string][]string{
		"containerd":  {"containerd 1.", "at " + env.Address},
		"runc":        {"runc 1.", "/runc"},
		"cgroups":     {"cpu", "memory", "pids"},
		"overlayfs":   {"overlay"},
		"disk-quota":  {"/dev/loop-control", "mkfs.ext4"},
		"fuse-device": {"/dev/fuse"},
		"image":       {containerdtest.MinimalImage, "sha256:", "MiB"},
		"s3-bucket":   {"local storage"},
	}
	for name, parts := range want {
		r, ok := rep.Result(name)
		if !ok || r.Status != doctor.Pass {
			t.Errorf("%s: %+v, want PASS", name, r)
			continue
		}
		for _, p := range parts {
			if !strings.Contains(r.Detail, p) {
				t.Errorf("%s: detail %q lacks %q", name, r.Detail, p)
			}
		}
	}
	if r, _ := rep.Result("fuse-driver"); r.Status == doctor.Fail || !strings.Contains(r.Detail, " at /") {
		t.Errorf("fuse-driver: %+v (a FUSE S3 driver is installed here)", r)
	}
	// The socket is absent: a warning, not a failure.
	if r, _ := rep.Result("socket"); r.Status != doctor.Warn {
		t.Errorf("socket: %+v", r)
	}
	// Another image is missing from the namespace: a failure with a fix.
	rep = doctor.Run(ctx, doctor.Config{
		ContainerdAddress: env.Address, ContainerdNamespace: "matrx",
		StateDir: env.Dir, Socket: filepath.Join(env.Dir, "matrxd.sock"),
		Image: "localhost/matrx/absent:latest",
	})
	if r, _ := rep.Result("image"); r.Status != doctor.Fail || !strings.Contains(r.Fix, "matrx image import") || rep.OK {
		t.Errorf("absent image: %+v", r)
	}
	if r, _ := rep.Result("containerd"); r.Status != doctor.Pass {
		t.Errorf("containerd on the second run: %+v", r)
	}
}

// TestS3 checks the bucket check against a private S3 server: reachable,
// missing, forbidden and unreachable each say so. Credentials come from the
// AWS environment variables, as for matrxd.
func TestS3(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	// Never read the host's AWS files nor ask an instance metadata service.
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadEndpoint := "http://" + closed.Addr().String()
	closed.Close()

	cases := []struct {
		name, bucket, endpoint, secret string
		status                         doctor.Status
		detail, fix                    string
	}{
		{"reachable", bucket, srv.Endpoint, srv.SecretKey, doctor.Pass, "reachable at " + srv.Endpoint, ""},
		{"missing bucket", "matrx-doctor-absent", srv.Endpoint, srv.SecretKey, doctor.Fail, "does not exist", "aws s3 mb"},
		{"wrong secret", bucket, srv.Endpoint, "wrong-secret", doctor.Fail, "denied", "credentials"},
		{"unreachable", bucket, deadEndpoint, srv.SecretKey, doctor.Fail, "unreachable", "MATRX_S3_ENDPOINT"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
			t.Setenv("AWS_SECRET_ACCESS_KEY", c.secret)
			rep := doctor.Run(context.Background(), doctor.Config{
				ContainerdAddress: filepath.Join(t.TempDir(), "none.sock"), StateDir: t.TempDir(),
				S3: hostconfig.S3{Bucket: c.bucket, Region: srv.Region, Endpoint: c.endpoint, PathStyle: true},
			}, doctor.WithTimeout(10*time.Second))
			r, _ := rep.Result("s3-bucket")
			if r.Status != c.status || !strings.Contains(r.Detail, c.detail) || !strings.Contains(r.Fix, c.fix) {
				t.Fatalf("got %+v, want %s with %q / fix %q", r, c.status, c.detail, c.fix)
			}
			if strings.Contains(r.Detail+r.Fix, srv.SecretKey) || strings.Contains(r.Detail+r.Fix, "wrong-secret") {
				t.Fatalf("a secret leaked into the report: %+v", r)
			}
		})
	}
}
