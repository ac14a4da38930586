// Package archtest holds the test that keeps the import arrows of the tree
// pointing one way: cmd → daemon → api → sandbox → runtime, mounts,
// registry; the CLI only through api/client. It has no production code.
package archtest
