package s3test

import "syscall"

// sysProcAttr puts versitygw in its own process group (so Stop reaches
// everything it forks). No Pdeathsig: the kernel sends it when the forking
// OS *thread* exits, and Go retires threads whenever a goroutine that
// called LockOSThread ends (the network tests do), which would kill a
// healthy server mid-test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

func killGroup(pid int, sig syscall.Signal) error {
	return syscall.Kill(-pid, sig)
}
