package objstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/containerd/errdefs"
)

// Defaults of the S3 store.
const (
	DefaultRegion      = "us-east-1"
	DefaultPartSize    = 16 << 20 // multipart threshold and part size
	DefaultConcurrency = 8        // parts or ranges in flight per transfer
	DefaultMaxAttempts = 5        // per request, including the first
	// DefaultRequestTimeout bounds one request, body included (a 16 MiB
	// part at 60 KiB/s): a silent connection must not hold a sync, and the
	// locks behind it, forever.
	DefaultRequestTimeout = 5 * time.Minute
	// DefaultResponseHeaderTimeout bounds the wait for a response's
	// headers once the request is sent (CompleteMultipartUpload of a large
	// object is the slowest to answer).
	DefaultResponseHeaderTimeout = time.Minute
	maxParts                     = 10000 // S3's limit on parts per upload
)

// S3Config is what the S3 store needs.
type S3Config struct {
	// Bucket must satisfy ValidateBucketName.
	Bucket string
	// Region defaults to us-east-1.
	Region string
	// Endpoint is the base URL of an S3-compatible service
	// ("http://127.0.0.1:7070"); empty means AWS.
	Endpoint string
	// PathStyle addresses buckets as ENDPOINT/BUCKET instead of
	// BUCKET.ENDPOINT (needed by most S3-compatible servers).
	PathStyle bool
	// AccessKey and SecretKey (and SessionToken) are static credentials. When
	// AccessKey is empty, credentials and settings come from the SDK's
	// standard chain (environment, shared config, instance role). With static
	// keys no AWS configuration is read from the environment at all.
	AccessKey    string
	SecretKey    string
	SessionToken string
}

type s3Options struct {
	partSize       int64
	concurrency    int
	maxAttempts    int
	requestTimeout time.Duration
	headerTimeout  time.Duration
	httpClient     aws.HTTPClient
	logger         *slog.Logger
}

// S3Option configures optional knobs of NewS3.
type S3Option func(*s3Options)

// WithPartSize sets the multipart threshold and part size (minimum 5 MiB).
func WithPartSize(n int64) S3Option {
	return func(o *s3Options) { o.partSize = max(n, 5<<20) }
}

// WithConcurrency sets how many parts or ranges of one object are transferred
// in parallel.
func WithConcurrency(n int) S3Option {
	return func(o *s3Options) { o.concurrency = max(n, 1) }
}

// WithMaxAttempts sets the attempts per request (1 disables retries).
func WithMaxAttempts(n int) S3Option {
	return func(o *s3Options) { o.maxAttempts = max(n, 1) }
}

// WithRequestTimeout bounds each request, its body included
// (DefaultRequestTimeout).
func WithRequestTimeout(d time.Duration) S3Option {
	return func(o *s3Options) { o.requestTimeout = d }
}

// WithResponseHeaderTimeout bounds the wait for response headers
// (DefaultResponseHeaderTimeout); ignored with WithHTTPClient.
func WithResponseHeaderTimeout(d time.Duration) S3Option {
	return func(o *s3Options) { o.headerTimeout = d }
}

// WithHTTPClient replaces the HTTP client (default: the SDK's, with enough
// idle connections per host for parallel transfers).
func WithHTTPClient(c aws.HTTPClient) S3Option {
	return func(o *s3Options) { o.httpClient = c }
}

// WithLogger sets the logger (default: slog.Default()).
func WithLogger(l *slog.Logger) S3Option {
	return func(o *s3Options) { o.logger = l }
}

// S3 is a Store on one bucket of an S3-compatible service. It is safe for
// concurrent use.
type S3 struct {
	client   *s3.Client
	bucket   string
	endpoint string
	opts     s3Options
	bufs     sync.Pool // *[]byte of copyBufSize
	smallBuf sync.Pool // *[]byte of smallBufSize, for small objects
}

const (
	copyBufSize  = 1 << 20
	smallBufSize = 64 << 10
)

// NewS3 builds the client. It does not contact the service; call Check.
func NewS3(ctx context.Context, cfg S3Config, opts ...S3Option) (*S3, error) {
	if err := ValidateBucketName(cfg.Bucket); err != nil {
		return nil, err
	}
	o := s3Options{
		partSize:       DefaultPartSize,
		concurrency:    DefaultConcurrency,
		maxAttempts:    DefaultMaxAttempts,
		requestTimeout: DefaultRequestTimeout,
		headerTimeout:  DefaultResponseHeaderTimeout,
	}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	if o.httpClient == nil {
		o.httpClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			// Parallel transfers of many small objects: keep the
			// connections instead of re-dialing for every request.
			tr.MaxIdleConnsPerHost = 256
			tr.MaxIdleConns = 256
			tr.ResponseHeaderTimeout = o.headerTimeout
		})
	}
	region := cfg.Region
	if region == "" {
		region = DefaultRegion
	}
	if (cfg.AccessKey == "") != (cfg.SecretKey == "") {
		return nil, fmt.Errorf("s3: access key and secret key must be given together: %w", errdefs.ErrInvalidArgument)
	}

	retryer := func() aws.Retryer {
		return retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = o.maxAttempts
			so.MaxBackoff = 5 * time.Second
			// The client-side retry quota would fail healthy requests after
			// a burst of retries across hundreds of parallel transfers.
			so.RateLimiter = ratelimit.None
		})
	}

	var awsCfg aws.Config
	if cfg.AccessKey != "" {
		awsCfg = aws.Config{
			Region:      region,
			Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)),
			HTTPClient:  o.httpClient,
			Retryer:     retryer,
		}
	} else {
		var err error
		awsCfg, err = config.LoadDefaultConfig(ctx,
			config.WithRegion(region),
			config.WithHTTPClient(o.httpClient),
			config.WithRetryer(retryer),
		)
		if err != nil {
			return nil, fmt.Errorf("s3: load AWS configuration: %w: %w", errdefs.ErrInvalidArgument, err)
		}
	}
	// Checksums only where the API requires them: S3-compatible servers
	// differ in their support of the newer flexible checksums, and the SigV4
	// payload hash already protects bodies on plain-HTTP endpoints.
	awsCfg.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	awsCfg.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired

	client := s3.NewFromConfig(awsCfg, func(so *s3.Options) {
		if cfg.Endpoint != "" {
			so.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		so.UsePathStyle = cfg.PathStyle
	})
	return &S3{
		client:   client,
		bucket:   cfg.Bucket,
		endpoint: cfg.Endpoint,
		opts:     o,
		bufs:     sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }},
		smallBuf: sync.Pool{New: func() any { b := make([]byte, smallBufSize); return &b }},
	}, nil
}

// Bucket returns the bucket name.
func (s *S3) Bucket() string { return s.bucket }

// Check verifies that the bucket exists and is reachable with the configured
// credentials (HeadBucket). The error says which of these failed:
// errdefs.ErrNotFound (the bucket does not exist), ErrPermissionDenied
// (credentials rejected or access denied), ErrUnavailable (the endpoint cannot
// be reached), ErrInvalidArgument (wrong region).
func (s *S3) Check(ctx context.Context) error {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	if err == nil {
		return nil
	}
	where := s.endpoint
	if where == "" {
		where = "AWS S3"
	}
	switch status := httpStatus(err); {
	case status == http.StatusNotFound:
		return fmt.Errorf("s3 bucket %q does not exist at %s: %w", s.bucket, where, errdefs.ErrNotFound)
	case status == http.StatusForbidden || status == http.StatusUnauthorized:
		return fmt.Errorf("s3 bucket %q: access denied at %s (check the credentials and the bucket policy): %w",
			s.bucket, where, errdefs.ErrPermissionDenied)
	case status == http.StatusMovedPermanently || status == http.StatusBadRequest:
		return fmt.Errorf("s3 bucket %q is not reachable in region %q at %s (wrong region?): %w",
			s.bucket, s.client.Options().Region, where, errdefs.ErrInvalidArgument)
	}
	err = mapErr(fmt.Sprintf("check s3 bucket %q", s.bucket), err)
	if errdefs.IsUnavailable(err) {
		return fmt.Errorf("s3 endpoint %s is unreachable: %w", where, err)
	}
	return err
}

// List implements Store.
func (s *S3) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
			Bucket: aws.String(s.bucket),
			Prefix: aws.String(prefix),
		})
		for p.HasMorePages() {
			pctx, cancel := s.deadline(ctx)
			page, err := p.NextPage(pctx)
			cancel()
			if err != nil {
				yield(ObjectInfo{}, mapErr(fmt.Sprintf("list s3://%s/%s", s.bucket, prefix), err))
				return
			}
			for _, o := range page.Contents {
				info := ObjectInfo{
					Key:          aws.ToString(o.Key),
					Size:         aws.ToInt64(o.Size),
					ETag:         trimETag(aws.ToString(o.ETag)),
					LastModified: aws.ToTime(o.LastModified),
				}
				if !yield(info, nil) {
					return
				}
			}
		}
	}
}

// IsEmpty reports whether no object's key starts with prefix, from a list
// of at most one key.
func (s *S3) IsEmpty(ctx context.Context, prefix string) (bool, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	out, err := s.client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.bucket), Prefix: aws.String(prefix), MaxKeys: aws.Int32(1),
	})
	if err != nil {
		return false, mapErr(fmt.Sprintf("list s3://%s/%s", s.bucket, prefix), err)
	}
	if len(out.Contents) == 0 && aws.ToBool(out.IsTruncated) {
		// S3 may answer a page with fewer keys than asked: then the
		// whole listing decides.
		return isEmptyByList(ctx, s, prefix)
	}
	return len(out.Contents) == 0, nil
}

// Head implements Store.
func (s *S3) Head(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		return ObjectInfo{}, mapErr(s.op("head", key), err)
	}
	return ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         trimETag(aws.ToString(out.ETag)),
		LastModified: aws.ToTime(out.LastModified),
		Meta:         Metadata(out.Metadata).lower(),
	}, nil
}

// Get implements Store. The request timeout covers reading the body too.
func (s *S3) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return nil, ObjectInfo{}, err
	}
	ctx, cancel := s.deadline(ctx)
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)})
	if err != nil {
		cancel()
		return nil, ObjectInfo{}, mapErr(s.op("get", key), err)
	}
	return &cancelCloser{ReadCloser: out.Body, cancel: cancel}, ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         trimETag(aws.ToString(out.ETag)),
		LastModified: aws.ToTime(out.LastModified),
		Meta:         Metadata(out.Metadata).lower(),
	}, nil
}

// cancelCloser releases a request's deadline when its body is closed.
type cancelCloser struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelCloser) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// deadline bounds one request (WithRequestTimeout).
func (s *S3) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	if s.opts.requestTimeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.opts.requestTimeout)
}

// Download implements Store. Objects of at least the part size are fetched as
// parallel ranged GETs pinned to one version with If-Match; an object replaced
// during the download fails with errdefs.ErrFailedPrecondition.
func (s *S3) Download(ctx context.Context, key string, size int64, w io.WriterAt) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	if size < 0 {
		info, err := s.Head(ctx, key)
		if err != nil {
			return ObjectInfo{}, err
		}
		size = info.Size
	}
	if size < s.opts.partSize {
		return s.downloadWhole(ctx, key, w)
	}
	return s.downloadRanges(ctx, key, w)
}

func (s *S3) downloadWhole(ctx context.Context, key string, w io.WriterAt) (ObjectInfo, error) {
	body, info, err := s.Get(ctx, key)
	if err != nil {
		return ObjectInfo{}, err
	}
	defer body.Close()
	n, err := s.copyAt(w, 0, body, info.Size)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: %w", s.op("download", key), transferErr(err))
	}
	if n != info.Size {
		return ObjectInfo{}, fmt.Errorf("%s: got %d of %d bytes: %w", s.op("download", key), n, info.Size, errdefs.ErrUnavailable)
	}
	return info, nil
}

// copyAt copies r (about size bytes) into w starting at off with a pooled
// buffer: 1 MiB, or 64 KiB for a small object, so that many small
// downloads in flight (hot sync runs dozens) hold little memory.
func (s *S3) copyAt(w io.WriterAt, off int64, r io.Reader, size int64) (int64, error) {
	pool := &s.bufs
	if size <= smallBufSize {
		pool = &s.smallBuf
	}
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	return io.CopyBuffer(io.NewOffsetWriter(w, off), r, *bp)
}

func (s *S3) getRange(ctx context.Context, key string, off, end int64, ifMatch string) (*s3.GetObjectOutput, error) {
	in := &s3.GetObjectInput{
		Bucket: aws.String(s.bucket),
		Key:    aws.String(key),
		Range:  aws.String(fmt.Sprintf("bytes=%d-%d", off, end-1)),
	}
	if ifMatch != "" {
		in.IfMatch = aws.String(quoteETag(ifMatch))
	}
	ctx, cancel := s.deadline(ctx)
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		cancel()
		return nil, mapErr(s.op("get range", key), err)
	}
	out.Body = &cancelCloser{ReadCloser: out.Body, cancel: cancel}
	return out, nil
}

func (s *S3) downloadRanges(ctx context.Context, key string, w io.WriterAt) (ObjectInfo, error) {
	ps := s.opts.partSize
	first, err := s.getRange(ctx, key, 0, ps, "")
	if httpStatus(err) == http.StatusRequestedRangeNotSatisfiable {
		return s.downloadWhole(ctx, key, w) // became empty since it was listed
	}
	if err != nil {
		return ObjectInfo{}, err
	}
	info := ObjectInfo{
		Key:          key,
		ETag:         trimETag(aws.ToString(first.ETag)),
		LastModified: aws.ToTime(first.LastModified),
		Meta:         Metadata(first.Metadata).lower(),
	}
	total, ok := totalFromContentRange(aws.ToString(first.ContentRange))
	if !ok {
		first.Body.Close()
		return ObjectInfo{}, fmt.Errorf("%s: bad Content-Range %q: %w", s.op("download", key),
			aws.ToString(first.ContentRange), errdefs.ErrUnknown)
	}
	info.Size = total

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	sem := make(chan struct{}, s.opts.concurrency)
	fail := func(err error) { cancel(err) }

	// The first range streams while the others are requested.
	sem <- struct{}{}
	wg.Go(func() {
		defer func() { <-sem }()
		defer first.Body.Close()
		want := min(ps, total)
		n, err := s.copyAt(w, 0, first.Body, ps)
		if err == nil && n != want {
			err = fmt.Errorf("got %d of %d bytes: %w", n, want, errdefs.ErrUnavailable)
		}
		if err != nil {
			fail(fmt.Errorf("%s: %w", s.op("download", key), transferErr(err)))
		}
	})
	for off := ps; off < total; off += ps {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		end := min(off+ps, total)
		wg.Go(func() {
			defer func() { <-sem }()
			out, err := s.getRange(ctx, key, off, end, info.ETag)
			if err != nil {
				fail(err)
				return
			}
			defer out.Body.Close()
			n, err := s.copyAt(w, off, out.Body, ps)
			if err == nil && n != end-off {
				err = fmt.Errorf("got %d of %d bytes: %w", n, end-off, errdefs.ErrUnavailable)
			}
			if err != nil {
				fail(fmt.Errorf("%s: %w", s.op("download", key), transferErr(err)))
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return ObjectInfo{}, err
	}
	return info, nil
}

// totalFromContentRange parses "bytes 0-99/1234".
func totalFromContentRange(cr string) (int64, bool) {
	i := strings.LastIndexByte(cr, '/')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(cr[i+1:], 10, 64)
	return n, err == nil && n >= 0
}

// Put implements Store. Bodies of at least the part size are sent as a
// multipart upload whose completion carries the condition.
func (s *S3) Put(ctx context.Context, key string, body io.Reader, size int64, cond Cond, meta Metadata) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	if err := cond.validate(); err != nil {
		return ObjectInfo{}, err
	}
	if err := meta.validate(); err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: %w", s.op("put", key), err)
	}
	if size < 0 {
		return ObjectInfo{}, fmt.Errorf("%s: size must be known: %w", s.op("put", key), errdefs.ErrInvalidArgument)
	}
	if size >= s.opts.partSize {
		return s.putMultipart(ctx, key, body, size, cond, meta)
	}
	rs, err := seekable(body, size)
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("%s: read body: %w", s.op("put", key), err)
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(key),
		Body:          rs,
		ContentLength: aws.Int64(size),
		Metadata:      meta,
	}
	setCond(&in.IfMatch, &in.IfNoneMatch, cond)
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	out, err := s.client.PutObject(ctx, in)
	if err != nil {
		return ObjectInfo{}, mapErr(s.op("put", key)+" ("+cond.String()+")", err)
	}
	return ObjectInfo{Key: key, Size: size, ETag: trimETag(aws.ToString(out.ETag))}, nil
}

func setCond(ifMatch, ifNoneMatch **string, cond Cond) {
	if cond.IfMatch != "" {
		*ifMatch = aws.String(quoteETag(cond.IfMatch))
	}
	if cond.IfNoneMatch != "" {
		*ifNoneMatch = aws.String(cond.IfNoneMatch)
	}
}

// seekable returns a ReadSeeker over the first size bytes of body, so that
// the SDK can hash it for signing and rewind it for retries.
func seekable(body io.Reader, size int64) (io.ReadSeeker, error) {
	if body == nil {
		return bytes.NewReader(nil), nil
	}
	if ra, ok := body.(io.ReaderAt); ok {
		return io.NewSectionReader(ra, 0, size), nil
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(body, buf); err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	return bytes.NewReader(buf), nil
}

// precheck evaluates cond with a HEAD, so that a multipart upload that would
// be refused at completion is not sent at all. Completion still carries the
// condition: this check is only an optimisation.
func (s *S3) precheck(ctx context.Context, key string, cond Cond) error {
	if cond == (Cond{}) {
		return nil
	}
	info, err := s.Head(ctx, key)
	switch {
	case errdefs.IsNotFound(err) && cond.IfNoneMatch != "":
		return nil
	case errdefs.IsNotFound(err):
		return fmt.Errorf("%s (%s): %w", s.op("put", key), cond, err)
	case err != nil:
		return err
	case cond.IfNoneMatch != "":
		return fmt.Errorf("%s (%s): object exists: %w", s.op("put", key), cond, errdefs.ErrFailedPrecondition)
	case info.ETag != cond.IfMatch:
		return fmt.Errorf("%s (%s): object has ETag %s: %w", s.op("put", key), cond, info.ETag, errdefs.ErrFailedPrecondition)
	}
	return nil
}

// PartSizeFor returns the part size S3.Put uses for a multipart body of size
// bytes (it grows beyond the configured part size to stay within 10,000
// parts).
func (s *S3) PartSizeFor(size int64) int64 {
	ps := s.opts.partSize
	if n := (size + ps - 1) / ps; n > maxParts {
		ps = (size + maxParts - 1) / maxParts
	}
	return ps
}

func (s *S3) putMultipart(ctx context.Context, key string, body io.Reader, size int64, cond Cond, meta Metadata) (ObjectInfo, error) {
	if err := s.precheck(ctx, key, cond); err != nil {
		return ObjectInfo{}, err
	}
	cctx, cancelCreate := s.deadline(ctx)
	created, err := s.client.CreateMultipartUpload(cctx, &s3.CreateMultipartUploadInput{
		Bucket:   aws.String(s.bucket),
		Key:      aws.String(key),
		Metadata: meta,
	})
	cancelCreate()
	if err != nil {
		return ObjectInfo{}, mapErr(s.op("create multipart upload", key), err)
	}
	uploadID := created.UploadId
	abort := func() {
		// Runs after failures, also when ctx was cancelled: leave no parts
		// behind to be billed.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, err := s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket: aws.String(s.bucket), Key: aws.String(key), UploadId: uploadID,
		}); err != nil {
			s.opts.logger.WarnContext(ctx, "abort multipart upload failed", "bucket", s.bucket, "key", key, "error", err)
		}
	}

	ps := s.PartSizeFor(size)
	nparts := int((size + ps - 1) / ps)
	parts := make([]types.CompletedPart, nparts)

	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	sem := make(chan struct{}, s.opts.concurrency)
	ra, isReaderAt := body.(io.ReaderAt)
	for i := range nparts {
		select {
		case sem <- struct{}{}:
		case <-pctx.Done():
		}
		if pctx.Err() != nil {
			break
		}
		off := int64(i) * ps
		n := min(ps, size-off)
		var part io.ReadSeeker
		if isReaderAt {
			part = io.NewSectionReader(ra, off, n)
		} else {
			// Sequential body: read this part into memory (at most
			// concurrency parts are buffered at a time).
			buf := make([]byte, n)
			if _, err := io.ReadFull(body, buf); err != nil {
				<-sem
				cancel(fmt.Errorf("%s: read part %d: %w: %w", s.op("put", key), i+1, errdefs.ErrInvalidArgument, err))
				break
			}
			part = bytes.NewReader(buf)
		}
		wg.Go(func() {
			defer func() { <-sem }()
			uctx, cancelPart := s.deadline(pctx)
			defer cancelPart()
			out, err := s.client.UploadPart(uctx, &s3.UploadPartInput{
				Bucket:        aws.String(s.bucket),
				Key:           aws.String(key),
				UploadId:      uploadID,
				PartNumber:    aws.Int32(int32(i + 1)),
				Body:          part,
				ContentLength: aws.Int64(n),
			})
			if err != nil {
				cancel(mapErr(fmt.Sprintf("%s part %d", s.op("upload", key), i+1), err))
				return
			}
			parts[i] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(int32(i + 1))}
		})
	}
	wg.Wait()
	if err := context.Cause(pctx); err != nil {
		abort()
		return ObjectInfo{}, err
	}

	in := &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(s.bucket),
		Key:             aws.String(key),
		UploadId:        uploadID,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	}
	setCond(&in.IfMatch, &in.IfNoneMatch, cond)
	cctx, cancelComplete := s.deadline(ctx)
	defer cancelComplete()
	out, err := s.client.CompleteMultipartUpload(cctx, in)
	if err != nil {
		abort()
		return ObjectInfo{}, mapErr(s.op("complete multipart upload", key)+" ("+cond.String()+")", err)
	}
	return ObjectInfo{Key: key, Size: size, ETag: trimETag(aws.ToString(out.ETag))}, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string, ifMatch string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	in := &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(key)}
	if ifMatch != "" {
		in.IfMatch = aws.String(quoteETag(ifMatch))
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	_, err := s.client.DeleteObject(ctx, in)
	if err != nil {
		err = mapErr(s.op("delete", key), err)
		if errdefs.IsNotFound(err) && !isMissingBucket(err) {
			return nil
		}
		return err
	}
	return nil
}

// maxCopySize is the largest object one CopyObject request copies.
const maxCopySize = 5 << 30

// Copy implements Store with CopyObject (metadata copied with the
// object). Objects over 5 GiB, which need a multipart copy, are refused
// with errdefs.ErrNotImplemented.
func (s *S3) Copy(ctx context.Context, src, dst, srcIfMatch string) (ObjectInfo, error) {
	for _, k := range []string{src, dst} {
		if err := ValidateKey(k); err != nil {
			return ObjectInfo{}, err
		}
	}
	in := &s3.CopyObjectInput{
		Bucket:     aws.String(s.bucket),
		Key:        aws.String(dst),
		CopySource: aws.String(s.bucket + "/" + url.PathEscape(src)),
	}
	if srcIfMatch != "" {
		in.CopySourceIfMatch = aws.String(quoteETag(srcIfMatch))
	}
	if info, err := s.Head(ctx, src); err != nil {
		return ObjectInfo{}, err
	} else if info.Size > maxCopySize {
		return ObjectInfo{}, fmt.Errorf("%s: %d bytes, over the 5 GiB of one copy: %w", s.op("copy", src), info.Size, errdefs.ErrNotImplemented)
	}
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	out, err := s.client.CopyObject(ctx, in)
	if err != nil {
		return ObjectInfo{}, mapErr(s.op("copy", src)+" to "+dst, err)
	}
	info := ObjectInfo{Key: dst}
	if r := out.CopyObjectResult; r != nil {
		info.ETag = trimETag(aws.ToString(r.ETag))
		info.LastModified = aws.ToTime(r.LastModified)
	}
	return info, nil
}

func (s *S3) op(verb, key string) string {
	return fmt.Sprintf("%s s3://%s/%s", verb, s.bucket, key)
}

func quoteETag(e string) string { return `"` + trimETag(e) + `"` }
