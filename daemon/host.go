package daemon

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	goruntime "runtime"
	"strconv"

	"github.com/matrx-dev/matrx/api"
	"github.com/matrx-dev/matrx/runtime"
)

// favorCgroupDynMods turns on the host cgroup2 mount's favordynmods (see
// runtime.FavorCgroupDynMods). Its failure costs latency, not function:
// it is logged and startup goes on.
func favorCgroupDynMods(log *slog.Logger) {
	point, changed, err := runtime.FavorCgroupDynMods()
	switch {
	case err != nil:
		log.Warn("cgroup favordynmods not set: a sandbox's first exec may wait for an RCU grace period (4-14 ms)", "error", err)
	case changed:
		log.Info("cgroup favordynmods on: moving processes into cgroups no longer waits for an RCU grace period", "mount", point)
	default:
		log.Debug("cgroup favordynmods already on", "mount", point)
	}
}

// hostCapacity is what this host offers sandboxes, read once at startup:
// the CPUs this process may run on and the memory in /proc/meminfo. Both
// are what a cluster scheduler places sandboxes against (GET /capacity).
func hostCapacity(log *slog.Logger) api.Host {
	h := api.Host{CPUs: float64(goruntime.NumCPU())}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		log.Warn("host memory unknown: GET /capacity reports 0", "error", err)
		return h
	}
	h.MemoryMB = memTotalMB(b)
	return h
}

// memTotalMB parses MemTotal (kB) out of /proc/meminfo; 0 if absent.
func memTotalMB(meminfo []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == "MemTotal:" {
			kb, err := strconv.ParseInt(string(f[1]), 10, 64)
			if err != nil || kb < 0 {
				return 0
			}
			return kb / 1024
		}
	}
	return 0
}
