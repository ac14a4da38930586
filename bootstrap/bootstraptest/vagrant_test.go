package bootstraptest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// vagrantEnv keeps vagrant's state out of $HOME and the checkout and stops it
// from phoning home (checkpoint) or loading user plugins.
func vagrantEnv(t *testing.T, extra ...string) []string {
	t.Helper()
	tmp := t.TempDir()
	return append([]string{
		"VAGRANT_HOME=" + filepath.Join(tmp, "home"),
		"VAGRANT_DOTFILE_PATH=" + filepath.Join(tmp, "dotfile"),
		"VAGRANT_CHECKPOINT_DISABLE=1",
		"VAGRANT_DISABLE_VBOXSYMLINKCREATE=1",
		"VAGRANT_NO_COLOR=1",
	}, extra...)
}

// TestVagrantfileValidates runs `vagrant validate --ignore-provider` in the
// repository root. No VM provider (VirtualBox, libvirt) runs on this
// machine, and plain `vagrant validate` stops at "No usable default provider
// could be found"; --ignore-provider validates everything except the
// provider blocks.
func TestVagrantfileValidates(t *testing.T) {
	vagrant := needTool(t, "vagrant")
	root := repoRoot(t)
	for _, tc := range []struct {
		name string
		env  []string
	}{
		{"default debian box", nil},
		{"ubuntu variant", []string{"MATRX_VAGRANT_BOX=ubuntu/jammy64", "MATRX_VAGRANT_CPUS=4", "MATRX_VAGRANT_MEMORY=8192"}},
		{"amazon linux variant", []string{"MATRX_VAGRANT_BOX=al2023", "MATRX_INSTALL_FLAGS=--with-networking"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runCmd(t, root, vagrantEnv(t, tc.env...), vagrant, "validate", "--ignore-provider")
			if r.code != 0 || !strings.Contains(r.stdout, "Vagrantfile validated successfully") {
				t.Fatalf("vagrant validate: %s", r)
			}
		})
	}
	// The checkout must not have gained a .vagrant directory.
	if _, err := os.Stat(filepath.Join(root, ".vagrant")); err == nil {
		t.Errorf("vagrant validate wrote %s/.vagrant", root)
	}

	// Control: validate does reject a broken Vagrantfile.
	dir := t.TempDir()
	broken := "Vagrant.configure(\"2\") do |config|\n  config.vm.box = \"debian/bookworm64\"\n  config.vm.no_such_option = 1\nend\n"
	if err := os.WriteFile(filepath.Join(dir, "Vagrantfile"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCmd(t, dir, vagrantEnv(t), vagrant, "validate", "--ignore-provider"); r.code == 0 || !strings.Contains(r.stdout+r.stderr, "no_such_option") {
		t.Errorf("vagrant validate did not reject a broken Vagrantfile: %s", r)
	}
}

// inlineHeredoc matches the provisioners' `inline: <<~'SHELL'` bodies.
var inlineHeredoc = regexp.MustCompile(`(?s)<<~'SHELL'\n(.*?)\n\s*SHELL\n`)

// TestVagrantProvisionScriptsParse checks the shell the VM will run with
// `bash -n`, since no VM can boot here to run it.
func TestVagrantProvisionScriptsParse(t *testing.T) {
	bash := needTool(t, "bash")
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "Vagrantfile"))
	if err != nil {
		t.Fatal(err)
	}
	bodies := inlineHeredoc.FindAllStringSubmatch(string(b), -1)
	if len(bodies) < 2 {
		t.Fatalf("found %d inline provision scripts, want at least 2", len(bodies))
	}
	for i, m := range bodies {
		p := filepath.Join(t.TempDir(), "provision.sh")
		if err := os.WriteFile(p, []byte(m[1]+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if r := runCmd(t, "/", nil, bash, "-n", p); r.code != 0 {
			t.Errorf("provision script %d does not parse: %s\n%s", i, r, m[1])
		}
	}
	// Provisioning must go through the project's own install script.
	for _, w := range []string{
		"bootstrap/install.sh --packages-only",
		"make build image-minimal image",
		"make test",
		"bootstrap/install.sh ${MATRX_INSTALL_FLAGS}",
		`"/opt/matrx"`,
		`"debian/bookworm64"`,
	} {
		if !strings.Contains(string(b), w) {
			t.Errorf("Vagrantfile lacks %q", w)
		}
	}
}

// TestShellScriptsParse runs `bash -n` over the bootstrap shell scripts.
func TestShellScriptsParse(t *testing.T) {
	bash := needTool(t, "bash")
	root := repoRoot(t)
	for _, s := range []string{"bootstrap/install.sh", "bootstrap/lib/fetch-verified.sh"} {
		p := filepath.Join(root, s)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s is not executable", s)
		}
		if r := runCmd(t, root, nil, bash, "-n", p); r.code != 0 {
			t.Errorf("%s: %s", s, r)
		}
	}
}
