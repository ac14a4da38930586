package fleet

import (
	"context"
	"fmt"
	"log/slog"

	vklog "github.com/virtual-kubelet/virtual-kubelet/log"
)

// vkLogger hands Virtual Kubelet's log lines (its own logger interface) to
// the provider's slog logger. Its info lines are chatty per-Pod traces, so
// they go out at debug level.
type vkLogger struct{ l *slog.Logger }

func withVKLogger(ctx context.Context, l *slog.Logger) context.Context {
	return vklog.WithLogger(ctx, vkLogger{l.With("component", "virtual-kubelet")})
}

func (v vkLogger) Debug(a ...any)                         { v.l.Debug(fmt.Sprint(a...)) }
func (v vkLogger) Debugf(f string, a ...any)              { v.l.Debug(fmt.Sprintf(f, a...)) }
func (v vkLogger) Info(a ...any)                          { v.l.Debug(fmt.Sprint(a...)) }
func (v vkLogger) Infof(f string, a ...any)               { v.l.Debug(fmt.Sprintf(f, a...)) }
func (v vkLogger) Warn(a ...any)                          { v.l.Warn(fmt.Sprint(a...)) }
func (v vkLogger) Warnf(f string, a ...any)               { v.l.Warn(fmt.Sprintf(f, a...)) }
func (v vkLogger) Error(a ...any)                         { v.l.Error(fmt.Sprint(a...)) }
func (v vkLogger) Errorf(f string, a ...any)              { v.l.Error(fmt.Sprintf(f, a...)) }
func (v vkLogger) Fatal(a ...any)                         { v.l.Error(fmt.Sprint(a...)) }
func (v vkLogger) Fatalf(f string, a ...any)              { v.l.Error(fmt.Sprintf(f, a...)) }
func (v vkLogger) WithField(k string, a any) vklog.Logger { return vkLogger{v.l.With(k, a)} }
func (v vkLogger) WithError(err error) vklog.Logger       { return vkLogger{v.l.With("error", err)} }
func (v vkLogger) WithFields(f vklog.Fields) vklog.Logger {
	args := make([]any, 0, 2*len(f))
	for k, a := range f {
		args = append(args, k, a)
	}
	return vkLogger{v.l.With(args...)}
}
