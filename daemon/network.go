package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/matrx-dev/matrx/runtime/network"
	"github.com/urfave/cli/v2"
)

// NetworkConfig selects sandbox networking.
type NetworkConfig struct {
	Mode          string // auto | on | off
	Bridge        string
	Subnet        netip.Prefix
	AllowInternal []netip.Prefix
	Nameservers   []netip.Addr
}

func networkFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "network", Value: "auto", EnvVars: []string{"MATRX_NETWORK"}, Usage: "sandbox networking: auto (on when the CNI plugins are installed), on, off (loopback only)"},
		&cli.StringFlag{Name: "network-bridge", Value: network.DefaultBridge, EnvVars: []string{"MATRX_NETWORK_BRIDGE"}},
		&cli.StringFlag{Name: "network-subnet", Value: network.DefaultSubnet().String(), EnvVars: []string{"MATRX_NETWORK_SUBNET"}, Usage: "IPv4 subnet of the sandbox bridge"},
		&cli.StringFlag{Name: "network-allow-internal", EnvVars: []string{"MATRX_NETWORK_ALLOW_INTERNAL"}, Usage: "comma-separated internal CIDRs sandboxes may reach despite the private-range block (e.g. a package mirror)"},
		&cli.StringFlag{Name: "nameservers", EnvVars: []string{"MATRX_NAMESERVERS"}, Usage: "comma-separated IPv4 resolvers for sandboxes (default: the host's upstream resolvers)"},
	}
}

func networkConfigFrom(c *cli.Context) (NetworkConfig, error) {
	nc := NetworkConfig{Mode: strings.ToLower(c.String("network")), Bridge: c.String("network-bridge")}
	var err error
	if nc.Subnet, err = netip.ParsePrefix(c.String("network-subnet")); err != nil {
		return nc, fmt.Errorf("network subnet %q is not a CIDR: %w", c.String("network-subnet"), errdefs.ErrInvalidArgument)
	}
	for _, s := range splitList(c.String("network-allow-internal")) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nc, fmt.Errorf("network allow-internal entry %q is not a CIDR: %w", s, errdefs.ErrInvalidArgument)
		}
		nc.AllowInternal = append(nc.AllowInternal, p)
	}
	for _, s := range splitList(c.String("nameservers")) {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nc, fmt.Errorf("nameserver %q is not an IPv4 address: %w", s, errdefs.ErrInvalidArgument)
		}
		nc.Nameservers = append(nc.Nameservers, a)
	}
	return nc, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Validate checks the mode; the network package validates the rest when
// the manager starts.
func (n NetworkConfig) Validate() error {
	switch n.Mode {
	case "", "auto", "on", "off":
		return nil
	}
	return fmt.Errorf("network %q: want auto, on or off: %w", n.Mode, errdefs.ErrInvalidArgument)
}

// openNetwork starts the sandbox network manager, or returns nil when
// networking is off (or, in auto mode, when the CNI plugins are missing).
func openNetwork(ctx context.Context, cfg Config, log *slog.Logger) (*network.Manager, error) {
	nc := cfg.Network
	if nc.Mode == "off" {
		log.Info("sandbox networking is off: loopback only")
		return nil, nil
	}
	if nc.Mode == "auto" || nc.Mode == "" {
		if !pluginsPresent() {
			log.Warn("sandbox networking off: CNI plugins not found (install containernetworking-plugins); sandboxes get loopback only")
			return nil, nil
		}
	}
	opts := []network.Option{}
	if nc.Bridge != "" {
		opts = append(opts, network.WithBridge(nc.Bridge))
	}
	if nc.Subnet.IsValid() {
		opts = append(opts, network.WithSubnet(nc.Subnet))
	}
	m, err := network.New(ctx, network.Config{
		StateDir: filepath.Join(cfg.StateDir, "network"), AllowInternal: nc.AllowInternal,
		Nameservers: nc.Nameservers, GatewayPort: uint16(cfg.SandboxAPIPort), Logger: log,
	}, opts...)
	if err != nil {
		return nil, fmt.Errorf("sandbox networking: %w", err)
	}
	log.Info("sandbox networking on", "bridge", m.Bridge(), "subnet", m.Subnet().String(), "nameservers", fmt.Sprint(m.Nameservers()))
	return m, nil
}

func pluginsPresent() bool {
	for _, d := range network.DefaultPluginDirs() {
		if _, err := os.Stat(filepath.Join(d, "bridge")); err == nil {
			return true
		}
	}
	return false
}
