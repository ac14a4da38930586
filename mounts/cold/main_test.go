package cold

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/matrx-dev/matrx/mounts/s3test"
)

func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "mount-s3" {
		os.Exit(fakeMountS3(os.Args[1:])) // see fake_linux_test.go
	}
	s3test.Main(m)
}
