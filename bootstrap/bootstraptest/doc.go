// Package bootstraptest tests the host-operations files under bootstrap/ and
// the repository's Vagrantfile: the systemd units (their directives, parsed
// with go-systemd's unit package, and `systemd-analyze verify`), the
// checksum-verified downloader bootstrap/lib/fetch-verified.sh (against an
// httptest server on 127.0.0.1), bootstrap/install.sh (--dry-run changes
// nothing, a failing step is named, a checksum mismatch installs nothing) and
// `vagrant validate`.
//
// It owns no production code and must not change the host: every install.sh
// run here is either --dry-run or stops before its first change, and runs
// with a PATH in which the commands that could change the host (apt-get,
// dnf, groupadd, systemctl, sysctl, install, ...) are stand-ins that record
// their call and fail.
//
// Tests that need root or a tool this machine may lack (systemd-analyze,
// vagrant, curl) skip with a message, or fail when MATRX_REQUIRE_INTEGRATION=1.
package bootstraptest
