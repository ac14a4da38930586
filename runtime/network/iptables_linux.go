package network

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/containerd/errdefs"
)

// iptables runs one family's iptables and iptables-restore binaries
// (whichever backend, nft or legacy, the host's alternatives select).
type iptables struct {
	bin, restore string
}

func lookIPTables(family string) (iptables, error) {
	name := map[string]string{"4": "iptables", "6": "ip6tables"}[family]
	bin, err := exec.LookPath(name)
	if err != nil {
		return iptables{}, fmt.Errorf("%s not found: %w", name, errdefs.ErrFailedPrecondition)
	}
	restore, err := exec.LookPath(name + "-restore")
	if err != nil {
		return iptables{}, fmt.Errorf("%s-restore not found: %w", name, errdefs.ErrFailedPrecondition)
	}
	return iptables{bin: bin, restore: restore}, nil
}

// run executes iptables with args and returns its stdout.
func (t iptables) run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, t.bin, append([]string{"-w", "10"}, args...)...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %s: %v: %s: %w", t.bin, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()), errdefs.ErrUnavailable)
	}
	return out.String(), nil
}

// apply feeds rules to iptables-restore --noflush: one atomic transaction.
func (t iptables) apply(ctx context.Context, rules string) error {
	cmd := exec.CommandContext(ctx, t.restore, "-w", "10", "--noflush")
	cmd.Stdin = strings.NewReader(rules)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s (input:\n%s): %w", t.restore, err, strings.TrimSpace(stderr.String()), rules, errdefs.ErrUnavailable)
	}
	return nil
}

// list returns the "-A ..." lines of a chain or, with chain "", of the
// whole table ("-N"/"-P" lines included).
func (t iptables) list(ctx context.Context, table, chain string) ([]string, error) {
	args := []string{"-t", table, "-S"}
	if chain != "" {
		args = append(args, chain)
	}
	out, err := t.run(ctx, args...)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}

// chainExists reports whether a user chain exists in table. (iptables-nft
// answers "-S CHAIN" for a missing chain with a misleading error, so the
// whole table is listed instead.)
func (t iptables) chainExists(ctx context.Context, table, chain string) (bool, error) {
	lines, err := t.list(ctx, table, "")
	if err != nil {
		return false, err
	}
	for _, l := range lines {
		if l == "-N "+chain {
			return true, nil
		}
	}
	return false, nil
}

// has reports whether rule exists (iptables -C).
func (t iptables) has(ctx context.Context, table, chain string, spec []string) bool {
	_, err := t.run(ctx, append([]string{"-t", table, "-C", chain}, spec...)...)
	return err == nil
}

// ensureFirst inserts rule at the top of chain unless it is there already.
func (t iptables) ensureFirst(ctx context.Context, j jump) error {
	if t.has(ctx, j.table, j.chain, j.spec) {
		return nil
	}
	_, err := t.run(ctx, append([]string{"-t", j.table, "-I", j.chain, "1"}, j.spec...)...)
	return err
}

// deleteAll removes every copy of rule from chain.
func (t iptables) deleteAll(ctx context.Context, j jump) error {
	for i := 0; i < 100 && t.has(ctx, j.table, j.chain, j.spec); i++ {
		if _, err := t.run(ctx, append([]string{"-t", j.table, "-D", j.chain}, j.spec...)...); err != nil {
			return err
		}
	}
	return nil
}

// removeChain flushes and deletes a user chain if it exists.
func (t iptables) removeChain(ctx context.Context, table, chain string) error {
	ok, err := t.chainExists(ctx, table, chain)
	if err != nil || !ok {
		return err
	}
	if _, err := t.run(ctx, "-t", table, "-F", chain); err != nil {
		return err
	}
	_, err = t.run(ctx, "-t", table, "-X", chain)
	return err
}
