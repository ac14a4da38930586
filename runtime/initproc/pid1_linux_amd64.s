// PID 1 without the Go runtime (see "Idle PID 1" in initproc.go).
//
// matrx_pid1_entry is the ELF entry point of matrx-init when it is linked
// with -E matrx_pid1_entry (EntrySymbol; the Makefile and
// containerdtest.BuildInit do). It runs before anything of Go's: with any
// argument it jumps to Go's own entry (_rt0_amd64_linux) with the stack
// untouched, so the subcommands start exactly as they would without it.
// Without arguments it is the sandbox's idle PID 1: one thread, no heap,
// raw system calls only:
//
//	block every signal
//	loop:
//	    sig = rt_sigtimedwait(every signal)
//	    SIGTERM or SIGINT: unblock, execve(argv[0], [argv[0], "pid1-stopping"], envp)
//	    anything else: reap every exited child (wait4 WNOHANG until none)
//
// A blocked signal is queued even for a namespace's init with no handler
// (the kernel drops only unblocked SIG_DFL ones), so PID 1 gets exactly
// the signals the Go version's handlers got. Stopping re-executes the same
// file into the Go code (initproc.Stopping), which waits to be the last
// process; it is a one-off start at the end of a sandbox's life. If that
// execve fails, PID 1 exits at once, which ends the sandbox without its
// grace period: the runtime's own kill would have ended it anyway.

#include "textflag.h"

#define SYS_rt_sigprocmask	14
#define SYS_execve	59
#define SYS_wait4	61
#define SYS_rt_sigtimedwait	128
#define SYS_exit_group	231

#define SIG_SETMASK	2
#define SIGINT	2
#define SIGTERM	15
#define WNOHANG	1

// 0(SP) is argc, 8(SP) argv[0]; with argc == 1, argv[1] (16(SP)) is NULL
// and the environment starts at 24(SP). Nothing below pushes, so those
// offsets hold throughout.
TEXT matrx_pid1_entry(SB), NOSPLIT|NOFRAME, $0
	MOVQ	0(SP), AX
	CMPQ	AX, $1
	JNE	goruntime

	MOVQ	$SIG_SETMASK, DI
	LEAQ	allsigs<>(SB), SI
	MOVQ	$0, DX
	MOVQ	$8, R10
	MOVQ	$SYS_rt_sigprocmask, AX
	SYSCALL
	TESTQ	AX, AX
	JNE	goruntime // cannot block signals: be the Go PID 1

wait:
	LEAQ	allsigs<>(SB), DI
	MOVQ	$0, SI // no siginfo
	MOVQ	$0, DX // no timeout
	MOVQ	$8, R10
	MOVQ	$SYS_rt_sigtimedwait, AX
	SYSCALL
	CMPQ	AX, $SIGTERM
	JEQ	stop
	CMPQ	AX, $SIGINT
	JEQ	stop

reap:
	MOVQ	$-1, DI // any child
	MOVQ	$0, SI
	MOVQ	$WNOHANG, DX
	MOVQ	$0, R10
	MOVQ	$SYS_wait4, AX
	SYSCALL
	CMPQ	AX, $0
	JGT	reap
	JMP	wait

stop:
	MOVQ	$SIG_SETMASK, DI
	LEAQ	nosigs<>(SB), SI
	MOVQ	$0, DX
	MOVQ	$8, R10
	MOVQ	$SYS_rt_sigprocmask, AX
	SYSCALL
	// argv for the Go code: argv[0], "pid1-stopping", NULL.
	MOVQ	8(SP), AX
	MOVQ	AX, stopargv<>+0(SB)
	LEAQ	stoparg<>(SB), AX
	MOVQ	AX, stopargv<>+8(SB)
	MOVQ	8(SP), DI
	LEAQ	stopargv<>(SB), SI
	LEAQ	24(SP), DX
	MOVQ	$SYS_execve, AX
	SYSCALL
	MOVQ	$0, DI
	MOVQ	$SYS_exit_group, AX
	SYSCALL

goruntime:
	JMP	_rt0_amd64_linux(SB)

DATA	allsigs<>+0(SB)/8, $-1
GLOBL	allsigs<>(SB), RODATA, $8
DATA	nosigs<>+0(SB)/8, $0
GLOBL	nosigs<>(SB), RODATA, $8

// "pid1-stopping\0" (StoppingArg)
DATA	stoparg<>+0(SB)/8, $"pid1-sto"
DATA	stoparg<>+8(SB)/8, $"pping\x00\x00\x00"
GLOBL	stoparg<>(SB), RODATA, $16

// argv[0], "pid1-stopping", NULL: filled in just before the execve.
GLOBL	stopargv<>(SB), NOPTR, $24
