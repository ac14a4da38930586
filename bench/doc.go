// Package bench measures matrxd against bare containerd on this machine and
// prints a table (`make bench`). It asserts nothing about speed: numbers are
// for reading and comparing, never for failing a build.
package bench
