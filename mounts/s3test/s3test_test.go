package s3test

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/matrx-dev/matrx/testenv"
)

func TestMain(m *testing.M) { Main(m) }

func TestBucketName(t *testing.T) {
	for _, name := range []string{
		"TestX", "TestRoundTrip/s3", "Test_Under_Scores", strings.Repeat("VeryLongTestName", 10),
		"Test/with spaces and ünïcode", "T", "---",
	} {
		b := bucketName(name)
		if len(b) < 3 || len(b) > 63 {
			t.Errorf("bucketName(%q) = %q: bad length", name, b)
		}
		for _, c := range b {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				t.Errorf("bucketName(%q) = %q: bad character %q", name, b, c)
			}
		}
		if b[0] == '-' || b[len(b)-1] == '-' {
			t.Errorf("bucketName(%q) = %q: starts or ends with '-'", name, b)
		}
	}
	if a, b := bucketName("TestX"), bucketName("TestX"); a == b {
		t.Error("bucket names are not unique")
	}
}

func TestSharedServer(t *testing.T) {
	srv := Start(t)
	if again := Start(t); again != srv {
		t.Fatal("Start launched a second server")
	}
	b1, b2 := srv.NewBucket(t), srv.NewBucket(t)
	if b1 == b2 {
		t.Fatal("NewBucket returned the same bucket twice")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := srv.Client().HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(b1)}); err != nil {
		t.Fatalf("new bucket is not there: %v", err)
	}
	if !strings.HasPrefix(srv.Endpoint, "http://127.0.0.1:") {
		t.Fatalf("endpoint %s is not on loopback", srv.Endpoint)
	}
}

// TestLaunchStop: Stop leaves no process and no data behind.
func TestLaunchStop(t *testing.T) {
	if _, err := FindBinary(); err != nil {
		testenv.Skip(t, "%v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv, err := Launch(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid, dir := srv.Pid(), srv.Dir
	if err := srv.CreateBucket(ctx, "launch-stop"); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("versitygw %d still exists after Stop: %v", pid, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("data dir %s left behind: %v", dir, err)
	}
	if err := srv.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}
