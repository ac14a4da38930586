package hostconfig

import (
	"testing"

	"github.com/urfave/cli/v2"
)

func TestS3FromFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want S3
	}{
		{nil, S3{Region: S3Region}},
		{[]string{"--s3-bucket", "b"}, S3{Bucket: "b", Region: S3Region}},
		{[]string{"--s3-endpoint", "http://127.0.0.1:9000"}, S3{Region: S3Region, Endpoint: "http://127.0.0.1:9000", PathStyle: true}},
		{[]string{"--s3-endpoint", "http://e", "--s3-path-style=false"}, S3{Region: S3Region, Endpoint: "http://e"}},
		{[]string{"--s3-path-style", "--s3-region", "eu-west-1"}, S3{Region: "eu-west-1", PathStyle: true}},
	} {
		var got S3
		app := &cli.App{Flags: S3Flags("bucket"), Action: func(ctx *cli.Context) error { got = S3FromFlags(ctx); return nil }}
		if err := app.Run(append([]string{"x"}, c.args...)); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%v: %+v, want %+v", c.args, got, c.want)
		}
	}
}
