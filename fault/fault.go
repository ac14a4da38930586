// Package fault names the crash points of matrxd's crash-injection suite:
// the steps of create, stop, exec, checkpoint and final sync where the
// suite kills the daemon (SIGKILL, as kill -9 would) to prove that a
// restart leaves nothing leaked and loses no file.
//
// It owns the names and nothing else. In a normal build (the production
// binary) At and With compile to nothing: no point, name or environment
// variable is in the binary (the suite checks). Built with the matrxfault
// tag (daemontest.BuildMatrxd(t, dir, "matrxfault")), At reads the file
// named by MATRX_FAULT_FILE each time it is reached and, when the file
// holds that point's name, writes "matrx fault: NAME" to stderr and
// SIGKILLs its own process. The suite arms a point by writing its name
// there right before the operation, so startup and earlier operations
// never trip it.
//
// Names are "operation/step". Code shared by several operations (a hot
// sync runs for checkpoints and for final syncs) names only its step and
// gets the operation from the context (With).
package fault
