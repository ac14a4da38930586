package s3test

import "syscall"

// sysProcAttr puts versitygw in its own process group (so Stop reaches
// everything it forks) and asks the kernel to kill it if the test binary dies
// without calling Stop.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func killGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
