package errclass

import (
	"fmt"
	"testing"
)

func TestIsInsufficientStorage(t *testing.T) {
	if !IsInsufficientStorage(fmt.Errorf("disk of 20 GiB: %w", ErrInsufficientStorage)) {
		t.Fatal("wrapped class not recognised")
	}
	if IsInsufficientStorage(fmt.Errorf("other")) || IsInsufficientStorage(nil) {
		t.Fatal("another error recognised")
	}
}
