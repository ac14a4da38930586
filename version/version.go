// Package version holds the build version of matrx binaries, set at link
// time with -ldflags "-X github.com/matrx-dev/matrx/version.Version=...".
package version

// Version is the build version; "dev" for unversioned builds.
var Version = "dev"
