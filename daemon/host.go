package daemon

import (
	"bufio"
	"bytes"
	"log/slog"
	"os"
	goruntime "runtime"
	"strconv"

	"github.com/matrx-dev/matrx/api"
)

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
