package doctor

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/mounts/objstore"
)

// checkS3 asks the configured bucket for itself (HeadBucket through
// objstore.S3.Check) with the credentials matrxd would use: the standard
// AWS chain.
func checkS3(ctx context.Context, e *env) Result {
	s := e.cfg.S3
	if s.Bucket == "" {
		return pass("no bucket configured (MATRX_S3_BUCKET unset): local storage under %s", filepath.Join(e.cfg.StateDir, "storage"))
	}
	where := s.Endpoint
	if where == "" {
		where = "AWS S3"
	}
	if err := objstore.ValidateBucketName(s.Bucket); err != nil {
		return fail("set MATRX_S3_BUCKET / --s3-bucket to a valid bucket name", "%v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	st, err := objstore.NewS3(ctx, objstore.S3Config{
		Bucket: s.Bucket, Region: s.Region, Endpoint: s.Endpoint, PathStyle: s.PathStyle,
	}, objstore.WithMaxAttempts(2))
	if err != nil {
		return fail("check the AWS configuration (AWS_* environment, ~/.aws/config)", "cannot configure the S3 client: %v", err)
	}
	err = st.Check(ctx)
	const creds = "the credentials of the standard AWS chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or the instance role)"
	switch {
	case err == nil:
		return pass("bucket %q reachable at %s (region %s)", s.Bucket, where, regionOr(s.Region))
	case errdefs.IsNotFound(err):
		return fail(fmt.Sprintf("create it (`aws s3 mb s3://%s`) or correct MATRX_S3_BUCKET", s.Bucket),
			"bucket %q does not exist at %s", s.Bucket, where)
	case errdefs.IsPermissionDenied(err):
		return fail("check "+creds+" and the bucket policy (s3:ListBucket, GetObject, PutObject, DeleteObject)",
			"access to bucket %q denied at %s: %v", s.Bucket, where, err)
	case errdefs.IsUnavailable(err):
		return fail("check MATRX_S3_ENDPOINT, DNS and the network path to the endpoint",
			"S3 endpoint %s is unreachable: %v", where, err)
	case errdefs.IsInvalidArgument(err):
		return fail("set MATRX_S3_REGION to the bucket's region", "bucket %q is not in region %s: %v", s.Bucket, regionOr(s.Region), err)
	}
	return fail("check "+creds+" and MATRX_S3_ENDPOINT / MATRX_S3_REGION", "cannot reach bucket %q at %s: %v", s.Bucket, where, err)
}

func regionOr(r string) string {
	if r == "" {
		return objstore.DefaultRegion
	}
	return r
}
