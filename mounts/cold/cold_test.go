package cold

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/ids"
)

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestPrefix(t *testing.T) {
	if p := Prefix(ids.MustParseUserID("alice")); p != "users/alice/cold/" {
		t.Fatalf("Prefix(alice) = %q", p)
	}
}

func TestUserPath(t *testing.T) {
	for _, c := range []struct {
		base, user string
		elems      []string
		want       string
		wantErr    bool
	}{
		{"/s", "alice", []string{"cold"}, "/s/users/alice/cold", false},
		{"/s/", "alice", nil, "/s/users/alice", false},
		{"s", "alice", nil, "", true},
		{"/s", "alice", []string{"../bob"}, "", true},
		{"/s", "alice", []string{".."}, "", true},
	} {
		got, err := userPath(c.base, ids.MustParseUserID(c.user), c.elems...)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("userPath(%q, %q, %q) = %q, %v; want %q, err=%v", c.base, c.user, c.elems, got, err, c.want, c.wantErr)
		}
	}
}

func FuzzUserPath(f *testing.F) {
	for _, s := range []string{"alice", "..", ".", "a/../../b", "", "\x00", "..\\x"} {
		f.Add(s, "cold")
	}
	f.Fuzz(func(t *testing.T, user, elem string) {
		u, err := ids.ParseUserID(user)
		if err != nil {
			return
		}
		p, err := userPath("/r", u, elem)
		if err != nil {
			return
		}
		if !strings.HasPrefix(p, "/r/users/") || filepath.Clean(p) != p {
			t.Fatalf("userPath(%q, %q) = %q: not a clean path below /r/users", user, elem, p)
		}
		rel := strings.TrimPrefix(p, "/r/users/")
		first, _, _ := strings.Cut(rel, "/")
		if first != user {
			t.Fatalf("userPath(%q, %q) = %q: lands in another user's directory", user, elem, p)
		}
	})
}

func TestIsFUSE(t *testing.T) {
	for fstype, want := range map[string]bool{
		"fuse": true, "fuse.s3fs": true, "fuseblk": true, "fuse.": false, "fusectl": false, "tmpfs": false, "": false,
	} {
		if got := isFUSE(fstype); got != want {
			t.Errorf("isFUSE(%q) = %v, want %v", fstype, got, want)
		}
	}
}

func TestTTLSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int64{0: 1, -time.Second: 1, time.Millisecond: 1, time.Second: 1, 1500 * time.Millisecond: 2, time.Minute: 60} {
		if got := ttlSeconds(d); got != want {
			t.Errorf("ttlSeconds(%v) = %d, want %d", d, got, want)
		}
	}
}

func TestMountS3Args(t *testing.T) {
	base := S3Config{Bucket: "bkt"}
	req := Request{UserID: "alice", UID: 1000, GID: 1000, CacheDir: "/c/users/alice"}
	for _, c := range []struct {
		name string
		s3   S3Config
		req  Request
		opts []Option
		want string
	}{{
		name: "aws defaults",
		s3:   base,
		req:  req,
		want: "bkt /stage --prefix users/alice/cold/ --allow-other --uid 1000 --gid 1000 --allow-delete --allow-overwrite --cache /c/users/alice --metadata-ttl 60 --foreground",
	}, {
		name: "root owner omits --uid/--gid (mount-s3 accepts 1 and above)",
		s3:   base,
		req:  Request{UserID: "alice", CacheDir: "/c"},
		want: "bkt /stage --prefix users/alice/cold/ --allow-other --allow-delete --allow-overwrite --cache /c --metadata-ttl 60 --foreground",
	}, {
		name: "s3-compatible endpoint",
		s3:   S3Config{Bucket: "bkt", Endpoint: "http://127.0.0.1:7070", ForcePathStyle: true, Region: "eu-west-1"},
		req:  req,
		opts: []Option{WithMetadataTTL(1500 * time.Millisecond)},
		want: "bkt /stage --prefix users/alice/cold/ --allow-other --uid 1000 --gid 1000 --allow-delete --allow-overwrite --cache /c/users/alice --metadata-ttl 2 --endpoint-url http://127.0.0.1:7070 --force-path-style --region eu-west-1 --foreground",
	}, {
		name: "no cache dir",
		s3:   base,
		req:  Request{UserID: "u.1", UID: 5, GID: 6},
		want: "bkt /stage --prefix users/u.1/cold/ --allow-other --uid 5 --gid 6 --allow-delete --allow-overwrite --metadata-ttl 60 --foreground",
	}} {
		t.Run(c.name, func(t *testing.T) {
			d, err := NewMountS3(FUSEConfig{S3: c.s3, Logger: discardLogger()}, c.opts...)
			if err != nil {
				t.Fatal(err)
			}
			cmd, err := d.command(c.req, "/stage")
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(cmd.Args, " "); got != c.want {
				t.Errorf("args:\n got %s\nwant %s", got, c.want)
			}
			if cmd.Path != "mount-s3" || len(cmd.Env) != 0 || len(cmd.Secrets) != 0 {
				t.Errorf("cmd = %+v", cmd)
			}
		})
	}

	d, _ := NewMountS3(FUSEConfig{S3: S3Config{Bucket: "b", AccessKey: "AK", SecretKey: "SK"}, Logger: discardLogger()}, WithBinary("/opt/mount-s3"))
	cmd, err := d.command(req, "/stage")
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Path != "/opt/mount-s3" || !slices.Equal(cmd.Env, []string{"AWS_ACCESS_KEY_ID=AK", "AWS_SECRET_ACCESS_KEY=SK"}) {
		t.Errorf("static credentials: cmd = %+v", cmd)
	}
	if strings.Contains(strings.Join(cmd.Args, " "), "SK") {
		t.Errorf("secret on the command line: %v", cmd.Args)
	}
	// An invalid user id cannot reach a driver: Request.UserID is an
	// ids.UserID, which only ids.ParseUserID makes (archtest).
}

func TestS3FSArgs(t *testing.T) {
	req := Request{UserID: "alice", UID: 1000, GID: 1000, CacheDir: "/c/users/alice"}
	for _, c := range []struct {
		name   string
		s3     S3Config
		req    Request
		passwd string
		opts   []Option
		want   string
	}{{
		name: "aws with instance profile",
		s3:   S3Config{Bucket: "bkt", Region: "eu-west-1"},
		req:  req,
		want: "bkt:/users/alice/cold /stage -f -o url=https://s3.eu-west-1.amazonaws.com,allow_other,uid=1000,gid=1000,umask=0022,mp_umask=0022,iam_role=auto,endpoint=eu-west-1,sigv4,stat_cache_expire=60,use_cache=/c/users/alice,del_cache,ensure_diskfree=2048,instance_name=alice,logfile=/dev/stderr",
	}, {
		name:   "versitygw with static keys",
		s3:     S3Config{Bucket: "bkt", Region: "us-east-1", Endpoint: "http://127.0.0.1:7070", ForcePathStyle: true, AccessKey: "a", SecretKey: "s"},
		req:    Request{UserID: "bob", UID: 1000, GID: 1001},
		passwd: "/sec/s3fs-bob-1.passwd",
		opts:   []Option{WithMetadataTTL(time.Second)},
		want:   "bkt:/users/bob/cold /stage -f -o url=http://127.0.0.1:7070,use_path_request_style,allow_other,uid=1000,gid=1001,umask=0022,mp_umask=0022,passwd_file=/sec/s3fs-bob-1.passwd,endpoint=us-east-1,sigv4,stat_cache_expire=1,ensure_diskfree=2048,instance_name=bob,logfile=/dev/stderr",
	}, {
		name: "no region, no endpoint: s3fs defaults",
		s3:   S3Config{Bucket: "bkt"},
		req:  Request{UserID: "c"},
		want: "bkt:/users/c/cold /stage -f -o allow_other,uid=0,gid=0,umask=0022,mp_umask=0022,iam_role=auto,sigv4,stat_cache_expire=60,ensure_diskfree=2048,instance_name=c,logfile=/dev/stderr",
	}} {
		t.Run(c.name, func(t *testing.T) {
			d, err := NewS3FS(FUSEConfig{S3: c.s3, Logger: discardLogger()}, c.opts...)
			if err != nil {
				t.Fatal(err)
			}
			args, err := d.args(c.req, "/stage", c.passwd)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(args, " "); got != c.want {
				t.Errorf("args:\n got %s\nwant %s", got, c.want)
			}
		})
	}

	d, _ := NewS3FS(FUSEConfig{S3: S3Config{Bucket: "b"}, Logger: discardLogger()})
	if _, err := d.args(Request{UserID: "a", CacheDir: "/c,allow_root"}, "/stage", ""); !errdefs.IsInvalidArgument(err) {
		t.Errorf("comma in a path: %v, want InvalidArgument", err)
	}
	if _, err := NewS3FS(FUSEConfig{S3: S3Config{Bucket: "b", Endpoint: "http://x,y"}, Logger: discardLogger()}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("comma in endpoint: %v, want InvalidArgument", err)
	}
}

func TestS3FSPasswdFile(t *testing.T) {
	secrets := filepath.Join(t.TempDir(), "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := NewS3FS(FUSEConfig{S3: S3Config{Bucket: "b", AccessKey: "AK", SecretKey: "SK"}, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := d.command(Request{UserID: "alice", SecretDir: secrets}, "/stage")
	if err != nil {
		t.Fatal(err)
	}
	if len(cmd.Secrets) != 1 || filepath.Dir(cmd.Secrets[0]) != secrets {
		t.Fatalf("secrets = %v", cmd.Secrets)
	}
	fi, err := os.Stat(cmd.Secrets[0])
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("passwd file: %v, mode %v", err, fi.Mode())
	}
	if b, _ := os.ReadFile(cmd.Secrets[0]); string(b) != "AK:SK\n" {
		t.Fatalf("passwd file content %q", b)
	}
	if !strings.Contains(strings.Join(cmd.Args, " "), "passwd_file="+cmd.Secrets[0]) {
		t.Fatalf("args do not name the passwd file: %v", cmd.Args)
	}

	if _, err := d.command(Request{UserID: "alice"}, "/stage"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("no secret dir: %v, want InvalidArgument", err)
	}
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := d.command(Request{UserID: "alice", SecretDir: open}, "/stage"); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("world-readable secret dir: %v, want FailedPrecondition", err)
	}
	if entries, _ := os.ReadDir(open); len(entries) != 0 {
		t.Errorf("a passwd file was written to a world-readable dir: %v", entries)
	}
}

func TestSelect(t *testing.T) {
	storage := "/var/lib/matrx/storage"
	s3 := S3Config{Bucket: "bkt"}
	for _, c := range []struct {
		name      string
		mode      string
		s3        S3Config
		installed []string
		want      string
		errClass  func(error) bool
	}{
		{"auto without bucket is local", "auto", S3Config{}, []string{"mount-s3", "s3fs"}, DriverLocal, nil},
		{"empty mode is auto", "", s3, []string{"mount-s3", "s3fs"}, DriverMountS3, nil},
		{"auto prefers mount-s3", "auto", s3, []string{"mount-s3", "s3fs"}, DriverMountS3, nil},
		{"auto falls back to s3fs", "auto", s3, []string{"s3fs"}, DriverS3FS, nil},
		{"auto with neither", "auto", s3, nil, "", errdefs.IsFailedPrecondition},
		{"explicit s3fs", "s3fs", s3, []string{"mount-s3", "s3fs"}, DriverS3FS, nil},
		{"explicit mount-s3 missing", "mount-s3", s3, []string{"s3fs"}, "", errdefs.IsFailedPrecondition},
		{"explicit s3fs without bucket", "s3fs", S3Config{}, []string{"s3fs"}, "", errdefs.IsInvalidArgument},
		{"local", "local", S3Config{}, nil, DriverLocal, nil},
		{"local with a bucket", "local", s3, nil, "", errdefs.IsInvalidArgument},
		{"unknown", "fuse", s3, nil, "", errdefs.IsInvalidArgument},
		{"half credentials", "auto", S3Config{Bucket: "b", AccessKey: "a"}, []string{"s3fs"}, "", errdefs.IsInvalidArgument},
	} {
		t.Run(c.name, func(t *testing.T) {
			look := func(name string) (string, error) {
				if slices.Contains(c.installed, name) {
					return "/usr/bin/" + name, nil
				}
				return "", errors.New("not found")
			}
			d, err := Select(SelectConfig{Mode: c.mode, S3: c.s3, LocalStorageDir: storage, Logger: discardLogger()}, WithLookPath(look))
			if c.errClass != nil {
				if err == nil || !c.errClass(err) || d != nil {
					t.Fatalf("Select = %v, %v; want a classified error and a nil driver", d, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Name() != c.want {
				t.Fatalf("Select chose %s, want %s", d.Name(), c.want)
			}
			switch d := d.(type) {
			case *MountS3:
				if d.o.binary != "/usr/bin/mount-s3" {
					t.Errorf("binary = %q", d.o.binary)
				}
			case *S3FS:
				if d.o.binary != "/usr/bin/s3fs" {
					t.Errorf("binary = %q", d.o.binary)
				}
			}
		})
	}
}

func TestTailBuffer(t *testing.T) {
	var lines []string
	b := newTailBuffer(10, func(l string) { lines = append(lines, l) })
	_, _ = b.Write([]byte("first line\nsec"))
	_, _ = b.Write([]byte("ond\nthird"))
	if got := b.String(); got != "cond\nthird" { // the last 10 bytes
		t.Errorf("tail = %q", got)
	}
	if !slices.Equal(lines, []string{"first line", "second"}) {
		t.Errorf("lines = %q", lines)
	}
	if got := newTailBuffer(10, nil).String(); got != "(no output)" {
		t.Errorf("empty tail = %q", got)
	}
}
