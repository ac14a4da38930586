package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/containerd/errdefs"

	"github.com/matrx-dev/matrx/mounts/objstore"
	"github.com/matrx-dev/matrx/mounts/s3test"
)

func TestCheck(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)

	// A port nobody listens on: bind one, then close it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	tests := []struct {
		name     string
		bucket   string
		endpoint string
		secret   string
		want     func(error) bool
		wantText string
	}{
		{"bucket exists", bucket, srv.Endpoint, srv.SecretKey, nil, ""},
		{"missing bucket", "no-such-bucket-" + strings.ToLower(t.Name()[:4]), srv.Endpoint, srv.SecretKey, errdefs.IsNotFound, "does not exist"},
		{"wrong secret key", bucket, srv.Endpoint, "wrong-" + srv.SecretKey, errdefs.IsPermissionDenied, "access denied"},
		{"unreachable endpoint", bucket, closed, srv.SecretKey, errdefs.IsUnavailable, closed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := objstore.NewS3(t.Context(), objstore.S3Config{
				Bucket: tt.bucket, Region: srv.Region, Endpoint: tt.endpoint, PathStyle: true,
				AccessKey: srv.AccessKey, SecretKey: tt.secret,
			}, objstore.WithMaxAttempts(2))
			if err != nil {
				t.Fatal(err)
			}
			err = s.Check(testCtx(t))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if !tt.want(err) {
				t.Fatalf("Check error %v has the wrong class", err)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Fatalf("Check error %q does not say %q", err, tt.wantText)
			}
			t.Logf("Check: %v", err)
		})
	}
}

func TestNewS3RejectsBadConfig(t *testing.T) {
	tests := []objstore.S3Config{
		{Bucket: "Bad_Bucket"},
		{Bucket: "ok-bucket", AccessKey: "only-access"},
	}
	for _, cfg := range tests {
		if _, err := objstore.NewS3(t.Context(), cfg); !errdefs.IsInvalidArgument(err) {
			t.Errorf("NewS3(%+v) = %v, want InvalidArgument", cfg, err)
		}
	}
}

func status(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// TestConditionalWritesS3 proves, with raw SDK calls (no precheck of ours in
// the way), which conditional headers versitygw honours. The findings are
// recorded in the package documentation.
func TestConditionalWritesS3(t *testing.T) {
	srv := s3test.Start(t)
	bucket := srv.NewBucket(t)
	c := srv.Client()
	ctx := testCtx(t)

	putObj := func(key, body string, ifMatch, ifNoneMatch *string) (*s3.PutObjectOutput, error) {
		return c.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(body),
			IfMatch: ifMatch, IfNoneMatch: ifNoneMatch,
		})
	}
	first, err := putObj("obj", "v1", nil, aws.String("*"))
	if err != nil {
		t.Fatalf("PutObject If-None-Match:* on a new key: %v", err)
	}

	t.Run("PutObject If-None-Match", func(t *testing.T) {
		_, err := putObj("obj", "v2", nil, aws.String("*"))
		if status(err) != http.StatusPreconditionFailed {
			t.Fatalf("If-None-Match:* on an existing key: %v, want 412", err)
		}
		_, err = putObj("obj", "v2", nil, first.ETag)
		if status(err) != http.StatusNotImplemented {
			t.Fatalf("If-None-Match:ETAG: %v, want 501", err)
		}
	})
	t.Run("PutObject If-Match", func(t *testing.T) {
		_, err := putObj("obj", "v2", aws.String(`"0123456789abcdef0123456789abcdef"`), nil)
		if status(err) != http.StatusPreconditionFailed {
			t.Fatalf("If-Match with a stale ETag: %v, want 412", err)
		}
		_, err = putObj("missing", "v2", first.ETag, nil)
		if status(err) != http.StatusNotFound {
			t.Fatalf("If-Match on a missing key: %v, want 404", err)
		}
		if _, err = putObj("obj", "v2", first.ETag, nil); err != nil {
			t.Fatalf("If-Match with the current ETag: %v", err)
		}
	})

	mpu := func(key string, size int) (*string, []types.CompletedPart) {
		t.Helper()
		cr, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		up, err := c.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: aws.String(bucket), Key: aws.String(key), UploadId: cr.UploadId,
			PartNumber: aws.Int32(1), Body: bytes.NewReader(randBytes(size, uint64(size))),
		})
		if err != nil {
			t.Fatal(err)
		}
		return cr.UploadId, []types.CompletedPart{{ETag: up.ETag, PartNumber: aws.Int32(1)}}
	}
	complete := func(key string, id *string, parts []types.CompletedPart, ifMatch, ifNoneMatch *string) (*s3.CompleteMultipartUploadOutput, error) {
		return c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket: aws.String(bucket), Key: aws.String(key), UploadId: id,
			MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
			IfMatch:         ifMatch, IfNoneMatch: ifNoneMatch,
		})
	}
	t.Run("CompleteMultipartUpload If-None-Match", func(t *testing.T) {
		id, parts := mpu("mp", 1000)
		// Someone creates the key while our parts are uploaded.
		if _, err := putObj("mp", "theirs", nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := complete("mp", id, parts, nil, aws.String("*")); status(err) != http.StatusPreconditionFailed {
			t.Fatalf("complete If-None-Match:* over an existing key: %v, want 412", err)
		}
		head, _ := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("mp")})
		if aws.ToInt64(head.ContentLength) != int64(len("theirs")) {
			t.Fatalf("refused completion replaced the object")
		}
	})
	t.Run("CompleteMultipartUpload If-Match", func(t *testing.T) {
		id, parts := mpu("mp2", 1000)
		v1, _ := putObj("mp2", "v1", nil, nil)
		if _, err := putObj("mp2", "v2", nil, nil); err != nil { // changed meanwhile
			t.Fatal(err)
		}
		if _, err := complete("mp2", id, parts, v1.ETag, nil); status(err) != http.StatusPreconditionFailed {
			t.Fatalf("complete If-Match with a stale ETag: %v, want 412", err)
		}
		head, _ := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("mp2")})
		if _, err := complete("mp2", id, parts, head.ETag, nil); err != nil {
			t.Fatalf("complete If-Match with the current ETag: %v", err)
		}
	})
	t.Run("CompleteMultipartUpload race", func(t *testing.T) {
		// Two writers complete create-only uploads of one key at once.
		const n = 4
		ids := make([]*string, n)
		parts := make([][]types.CompletedPart, n)
		for i := range n {
			ids[i], parts[i] = mpu("mprace", 1000+i)
		}
		var wg sync.WaitGroup
		results := make([]error, n)
		for i := range n {
			wg.Go(func() { _, results[i] = complete("mprace", ids[i], parts[i], nil, aws.String("*")) })
		}
		wg.Wait()
		wins := 0
		for _, err := range results {
			switch {
			case err == nil:
				wins++
			case status(err) == http.StatusPreconditionFailed:
			default:
				t.Errorf("complete: %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d create-only completions won, want 1", wins)
		}
	})
	t.Run("DeleteObject If-Match", func(t *testing.T) {
		cur, _ := putObj("del", "v1", nil, nil)
		_, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("del"),
			IfMatch: aws.String(`"0123456789abcdef0123456789abcdef"`)})
		if status(err) != http.StatusPreconditionFailed {
			t.Fatalf("delete If-Match with a stale ETag: %v, want 412", err)
		}
		if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("del"), IfMatch: cur.ETag}); err != nil {
			t.Fatalf("delete If-Match with the current ETag: %v", err)
		}
		if _, err := c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String("del"), IfMatch: cur.ETag}); err != nil {
			t.Fatalf("delete If-Match of a missing key: %v, want success", err)
		}
	})
}

// TestS3ErrorsAreClassified checks the errdefs classes of common failures
// through the store.
func TestS3ErrorsAreClassified(t *testing.T) {
	srv := s3test.Start(t)
	s := newS3(t, srv, srv.NewBucket(t))
	ctx := testCtx(t)
	if _, err := s.Put(ctx, strings.Repeat("k", 1025), strings.NewReader(""), 0, objstore.Cond{}, nil); !errdefs.IsInvalidArgument(err) {
		t.Errorf("put of a 1025-byte key = %v, want InvalidArgument", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Head(cctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("head with a cancelled context = %v, want context.Canceled", err)
	}
	gone := newS3(t, srv, "no-such-bucket-here")
	_, err := objstore.ListAll(ctx, gone, "")
	if !errdefs.IsNotFound(err) {
		t.Errorf("list of a missing bucket = %v, want NotFound", err)
	}
	if err := gone.Delete(ctx, "x", ""); !errdefs.IsNotFound(err) {
		t.Errorf("delete in a missing bucket = %v, want NotFound (not silently ignored)", err)
	}
}
