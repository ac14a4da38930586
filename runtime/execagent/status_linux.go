package execagent

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// nsPidOf reads the innermost pid of host process pid (the last field of
// NSpid in /proc/PID/status).
func nsPidOf(pid int) (int, bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
			fs := strings.Fields(rest)
			if len(fs) == 0 {
				return 0, false
			}
			n, err := strconv.Atoi(fs[len(fs)-1])
			return n, err == nil
		}
	}
	return 0, false
}
