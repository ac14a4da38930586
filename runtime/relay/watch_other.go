//go:build !linux

package relay

import "errors"

// Watcher needs inotify; elsewhere followers poll.
type Watcher struct{}

// Sub is a subscription (never made off Linux).
type Sub struct{ C chan struct{} }

// NewWatcher fails off Linux.
func NewWatcher() (*Watcher, error) { return nil, errors.New("relay: watching needs Linux inotify") }

// Watch fails off Linux.
func (w *Watcher) Watch(string) (*Sub, error) {
	return nil, errors.New("relay: watching needs Linux inotify")
}

// Close does nothing.
func (s *Sub) Close() {}

// Close does nothing.
func (w *Watcher) Close() error { return nil }
