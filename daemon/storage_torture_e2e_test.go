//go:build linux

package daemon_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/daemon"
	"github.com/matrx-dev/matrx/daemon/daemontest"
	"github.com/matrx-dev/matrx/mounts/s3test"
)

// TestStorageTorture is issue 9's storage torture test, bounded to about
// three minutes: four users, three sandboxes each one after the other,
// each writing, deleting and renaming files and directories while
// checkpoints run every second; the sandboxes end by TTL expiry, DELETE
// or the agent's complete signal, concurrently across users, while the
// S3 endpoint is frozen and resumed (a proxy in front of versitygw that
// stops moving bytes). Afterwards every user's bucket prefix holds exactly
// what their last sandbox left (names and contents), every sandbox
// started with exactly what the one before it left, and no conflict copy
// appears (no two sandboxes of one user overlapped).
func TestStorageTorture(t *testing.T) {
	t.Parallel() // see TestMain (storage_e2e_test.go)
	srv, bucket := s3Env(t)
	proxy := s3test.NewProxy(t, srv)
	h := daemontest.Start(t, func(c *daemon.Config) {
		c.Storage = daemon.StorageConfig{Bucket: bucket, Region: srv.Region, Endpoint: proxy.Endpoint, PathStyle: true,
			ColdDriver: "s3fs", CheckpointInterval: time.Second, DiskOvercommit: 8, TrashRetention: time.Hour}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := h.Client()

	// The endpoint goes silent three times, for a few seconds each.
	freezerDone := make(chan struct{})
	go func() {
		defer close(freezerDone)
		for _, at := range []time.Duration{8 * time.Second, 30 * time.Second, 70 * time.Second} {
			select {
			case <-time.After(at - time.Since(start(ctx))):
			case <-ctx.Done():
				return
			}
			proxy.Freeze()
			select {
			case <-time.After(4 * time.Second):
			case <-ctx.Done():
			}
			proxy.Thaw()
		}
	}()

	const users, gens = 4, 3
	final := make([]map[string]string, users)
	var wg sync.WaitGroup
	errs := make(chan error, users)
	for u := range users {
		wg.Go(func() {
			user := fmt.Sprintf("tort%d", u)
			var last map[string]string
			var prev string
			for g := range gens {
				if prev != "" {
					if err := waitSynced(ctx, c, prev); err != nil {
						errs <- fmt.Errorf("%s gen %d: %w", user, g, err)
						return
					}
				}
				cfg := &apitype.SandboxConfig{DiskMB: 64}
				if g == 0 {
					cfg.TTLSeconds = 60
				}
				s, err := c.Create(ctx, user, cfg)
				if err != nil {
					errs <- fmt.Errorf("%s gen %d: create: %w", user, g, err)
					return
				}
				prev = s.SandboxID
				got, err := tree(ctx, c, s.SandboxID)
				if err != nil {
					errs <- fmt.Errorf("%s gen %d: %w", user, g, err)
					return
				}
				if last != nil && !maps.Equal(got, last) {
					errs <- fmt.Errorf("%s gen %d started with %v, the last sandbox left %v", user, g, keys(got), keys(last))
					return
				}
				for round := range 15 {
					r, err := c.Exec(ctx, s.SandboxID, apitype.ExecRequest{Command: tortureOps})
					if err != nil || r.ExitCode != 0 {
						errs <- fmt.Errorf("%s gen %d round %d: %v %+v", user, g, round, err, r)
						return
					}
					time.Sleep(time.Duration(50+(u*37+round*71)%250) * time.Millisecond)
				}
				if last, err = tree(ctx, c, s.SandboxID); err != nil {
					errs <- fmt.Errorf("%s gen %d: %w", user, g, err)
					return
				}
				switch g {
				case 0: // the TTL ends it
					err = waitStatusCtx(ctx, c, s.SandboxID, "expired")
				case 1:
					err = c.Delete(ctx, s.SandboxID, false)
				case 2:
					if _, err = c.Complete(ctx, s.SandboxID, nil); err == nil {
						err = waitStatusCtx(ctx, c, s.SandboxID, "stopped")
					}
				}
				if err != nil {
					errs <- fmt.Errorf("%s gen %d: stop: %w", user, g, err)
					return
				}
			}
			if err := waitSynced(ctx, c, prev); err != nil {
				errs <- fmt.Errorf("%s: last sandbox: %w", user, err)
				return
			}
			final[u] = last
		})
	}
	wg.Wait()
	cancel()
	<-freezerDone
	proxy.Thaw()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}
	for u := range users {
		user := fmt.Sprintf("tort%d", u)
		got := bucketTree(t, srv, bucket, "users/"+user+"/hot/")
		for k := range got {
			if strings.Contains(k, ".conflict-") {
				t.Errorf("%s: conflict copy %s, though no two sandboxes of the user overlapped", user, k)
			}
		}
		if !maps.Equal(got, final[u]) {
			t.Errorf("%s: the bucket holds %v\nthe last sandbox left %v", user, keys(got), keys(final[u]))
		}
		if len(final[u]) == 0 {
			t.Errorf("%s: the last sandbox left nothing: the test did not exercise anything", user)
		}
	}
}

// tortureOps is one round of an agent's file churn: create and overwrite
// files, delete one, rename one, and now and then rename or remove a
// whole directory (busybox sh, $RANDOM).
const tortureOps = `cd /home/agent
n=$RANDOM
d=d$((n % 4))
mkdir -p $d
echo "$n $(date +%s%N)" > $d/f$((n % 13))
echo "more $n" >> d$((n % 3))/f$((n % 5)) 2>/dev/null || true
f=$(ls -d d*/f* 2>/dev/null | head -n $((n % 5 + 1)) | tail -n 1)
[ -n "$f" ] && [ $((n % 3)) -eq 0 ] && rm -f "$f"
g=$(ls -d d*/f* 2>/dev/null | tail -n 1)
[ -n "$g" ] && [ $((n % 4)) -eq 1 ] && mv "$g" d$((n % 2))/r$n 2>/dev/null
[ $((n % 11)) -eq 0 ] && [ -d d3 ] && mv d3 m$n
[ $((n % 17)) -eq 0 ] && rm -rf d2
true`

// tree returns path -> md5 of every file of a sandbox's home.
func tree(ctx context.Context, c interface {
	Exec(context.Context, string, apitype.ExecRequest) (*apitype.ExecResponse, error)
}, id string) (map[string]string, error) {
	r, err := c.Exec(ctx, id, apitype.ExecRequest{Command: `cd /home/agent && find . -type f | LC_ALL=C sort | xargs -r md5sum`})
	if err != nil || r.ExitCode != 0 {
		return nil, fmt.Errorf("list the home: %v %+v", err, r)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		sum, p, ok := strings.Cut(line, "  ")
		if ok {
			out[strings.TrimPrefix(p, "./")] = sum
		}
	}
	return out, nil
}

// bucketTree returns key (below prefix) -> md5 of every object, without
// directory markers and the prefix's .keep.
func bucketTree(t *testing.T, srv *s3test.Server, bucket, prefix string) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	p := s3.NewListObjectsV2Paginator(srv.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			k := strings.TrimPrefix(aws.ToString(o.Key), prefix)
			if strings.HasSuffix(k, "/") || k == ".keep" {
				continue
			}
			obj, err := srv.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: o.Key})
			if err != nil {
				t.Fatal(err)
			}
			h := md5.New()
			io.Copy(h, obj.Body)
			obj.Body.Close()
			out[k] = hex.EncodeToString(h.Sum(nil))
		}
	}
	return out
}

type getter interface {
	Get(context.Context, string) (*apitype.Sandbox, error)
}

// waitSynced waits until a stopped sandbox's hot files are all in the
// bucket (no sync pending).
func waitSynced(ctx context.Context, c getter, id string) error {
	for {
		s, err := c.Get(ctx, id)
		if err == nil && s.StoppedAt != nil && !s.HotSyncPending {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox %s never finished its final sync: %+v (%w)", id, s, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitStatusCtx(ctx context.Context, c getter, id, status string) error {
	for {
		s, err := c.Get(ctx, id)
		if err == nil && s.Status == status {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("sandbox %s never became %s: %+v (%w)", id, status, s, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func keys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// start is when the test's context was made (its deadline less 3 min).
func start(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d.Add(-3 * time.Minute)
}
