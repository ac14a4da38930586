// Package ctl is the matrx command-line interface: each command parses its
// flags, calls api/client, and prints a table (or JSON with --json). It
// holds no sandbox logic; the daemon validates everything. The one command
// that works without the daemon is `doctor`, which checks the host through
// package doctor.
package ctl

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	"github.com/urfave/cli/v2"

	"github.com/matrx-dev/matrx/api/apitype"
	"github.com/matrx-dev/matrx/api/client"
	"github.com/matrx-dev/matrx/doctor"
	"github.com/matrx-dev/matrx/version"
)

// App is the matrx command.
func App() *cli.App {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON instead of a table"}
	return &cli.App{
		Name:    "matrx",
		Usage:   "manage matrx sandboxes through the matrxd socket",
		Version: version.Version,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Value: client.DefaultSocket, EnvVars: []string{"MATRX_SOCKET"}, Usage: "matrxd API socket"},
		},
		ExitErrHandler: func(c *cli.Context, err error) {
			if err == nil {
				return
			}
			if ec, ok := err.(cli.ExitCoder); ok {
				if msg := ec.Error(); msg != "" {
					fmt.Fprintln(c.App.ErrWriter, msg)
				}
				cli.OsExiter(ec.ExitCode())
				return
			}
			fmt.Fprintln(c.App.ErrWriter, "matrx: "+err.Error())
			cli.OsExiter(1)
		},
		Commands: []*cli.Command{
			{
				Name: "create", Usage: "create a sandbox and print its id",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "user", Required: true, Usage: "user id owning the sandbox"},
					&cli.StringFlag{Name: "image"},
					&cli.Float64Flag{Name: "cpu"},
					&cli.Int64Flag{Name: "memory", Usage: "memory limit in MiB"},
					&cli.Int64Flag{Name: "pids"},
					&cli.Int64Flag{Name: "disk", Usage: "home disk quota in MiB"},
					&cli.StringFlag{Name: "network", Usage: "default (internet minus blocked ranges) or none (loopback only)"},
					&cli.StringSliceFlag{Name: "allow", Usage: "CIDR the sandbox may reach; switches to deny-by-default (repeatable)"},
					&cli.Int64Flag{Name: "ttl", Usage: "seconds"},
					&cli.StringSliceFlag{Name: "env", Usage: "K=V (repeatable)"},
					&cli.StringSliceFlag{Name: "label", Usage: "K=V (repeatable)"},
					jsonFlag,
				},
				Action: create,
			},
			{
				Name: "ls", Usage: "list sandboxes",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "user"},
					&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "include stopped sandboxes"},
					jsonFlag,
				},
				Action: list,
			},
			{Name: "inspect", Usage: "show one sandbox as JSON", ArgsUsage: "ID", Action: inspect},
			{
				Name: "exec", Usage: "run a command in a sandbox",
				ArgsUsage: "ID [--cwd DIR] [--user agent|root] [--timeout SECONDS] [--env K=V]... [--json] -- CMD...",
				// Flags may come before or after the id, as in docker exec;
				// everything after -- is the command. Parsed by parseExec.
				SkipFlagParsing: true,
				Action:          execCmd,
			},
			{
				Name: "rm", Usage: "stop and remove a sandbox (the record is kept)", ArgsUsage: "ID...",
				Flags:  []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "SIGKILL at once instead of a graceful stop"}},
				Action: remove,
			},
			{
				Name: "image", Usage: "manage images",
				Subcommands: []*cli.Command{
					{Name: "import", Usage: "import an OCI image archive", ArgsUsage: "FILE", Flags: []cli.Flag{jsonFlag}, Action: imageImport},
					{Name: "ls", Usage: "list images", Flags: []cli.Flag{jsonFlag}, Action: imageList},
				},
			},
			{
				Name: "storage", Usage: "a user's stored files",
				Subcommands: []*cli.Command{
					{Name: "stats", Usage: "objects and bytes per tier", ArgsUsage: "USER", Flags: []cli.Flag{jsonFlag}, Action: storageStats},
					{
						Name: "clean", Usage: "delete every object of one tier of a user (admin; refuses while the user has active sandboxes)", ArgsUsage: "USER",
						Flags: []cli.Flag{
							&cli.StringFlag{Name: "tier", Required: true, Usage: "hot or cold"},
							&cli.BoolFlag{Name: "yes", Usage: "confirm the deletion"},
							jsonFlag,
						},
						Action: storageClean,
					},
				},
			},
			{Name: "health", Usage: "show daemon health", Flags: []cli.Flag{jsonFlag}, Action: health},
			{Name: "version", Usage: "show client, daemon and containerd versions", Flags: []cli.Flag{jsonFlag}, Action: versionCmd},
			doctorCommand(jsonFlag),
		},
	}
}

func newClient(c *cli.Context) *client.Client {
	return client.New(c.String("socket"))
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func keyValues(list []string, flag string) (map[string]string, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--%s %q: want KEY=VALUE: %w", flag, kv, errdefs.ErrInvalidArgument)
		}
		m[k] = v
	}
	return m, nil
}

func oneID(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("%s needs exactly one sandbox id: %w", c.Command.Name, errdefs.ErrInvalidArgument)
	}
	return c.Args().First(), nil
}

func create(c *cli.Context) error {
	env, err := keyValues(c.StringSlice("env"), "env")
	if err != nil {
		return err
	}
	labels, err := keyValues(c.StringSlice("label"), "label")
	if err != nil {
		return err
	}
	cfg := &apitype.SandboxConfig{
		Image: c.String("image"), CPU: c.Float64("cpu"), MemoryMB: c.Int64("memory"), Pids: c.Int64("pids"), DiskMB: c.Int64("disk"),
		TTLSeconds: c.Int64("ttl"), Env: env, Labels: labels,
	}
	if c.IsSet("network") || c.IsSet("allow") {
		cfg.Network = &apitype.NetworkConfig{Mode: c.String("network"), Allow: c.StringSlice("allow")}
	}
	s, err := newClient(c).Create(c.Context, c.String("user"), cfg)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, s)
	}
	fmt.Fprintln(c.App.Writer, s.SandboxID)
	return nil
}

func list(c *cli.Context) error {
	l, err := newClient(c).List(c.Context, c.String("user"), c.Bool("all"))
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, l)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SANDBOX ID\tUSER\tSTATUS\tIMAGE\tCREATED\tEXPIRES")
	for _, s := range l.Sandboxes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.SandboxID, s.UserID, statusText(s), s.Image,
			ago(s.CreatedAt), s.ExpiresAt.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

// statusText is the STATUS column: the status, and a word when the last
// hot sync failed: for a stopped sandbox its files are still only on the
// host (the daemon keeps retrying).
func statusText(s apitype.Sandbox) string {
	switch {
	case !s.HotSyncPending:
		return s.Status
	case s.Status == "running" || s.Status == "ready":
		return s.Status + " (last checkpoint failed)"
	default:
		return s.Status + " (hot files not in S3 yet)"
	}
}

func ago(t time.Time) string {
	d := time.Since(t).Round(time.Second)
	return d.String() + " ago"
}

func inspect(c *cli.Context) error {
	id, err := oneID(c)
	if err != nil {
		return err
	}
	s, err := newClient(c).Get(c.Context, id)
	if err != nil {
		return err
	}
	return printJSON(c.App.Writer, s)
}

// execArgs is a parsed `matrx exec` command line.
type execArgs struct {
	id      string
	req     apitype.ExecRequest
	jsonOut bool
}

// parseExec parses exec's arguments: flags anywhere before "--", one id,
// and the command after "--" (or after the id when there is no "--").
func parseExec(args []string) (execArgs, error) {
	var out execArgs
	out.req.User = "agent"
	usage := func(format string, a ...any) (execArgs, error) {
		return out, fmt.Errorf("exec: "+format+" (usage: matrx exec ID [flags] -- CMD...): %w", append(a, errdefs.ErrInvalidArgument)...)
	}
	var cmd []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			cmd = args[i+1:]
			break
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			if out.id == "" {
				out.id = a
				continue
			}
			cmd = args[i:]
			break
		}
		if name == "json" {
			out.jsonOut = true
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return usage("flag --%s needs a value", name)
			}
			i++
			val = args[i]
		}
		switch name {
		case "cwd":
			v := val
			out.req.Cwd = &v
		case "user":
			out.req.User = val
		case "timeout":
			var t int
			if _, err := fmt.Sscan(val, &t); err != nil {
				return usage("--timeout %q is not a number of seconds", val)
			}
			out.req.Timeout = &t
		case "env":
			k, v, ok := strings.Cut(val, "=")
			if !ok || k == "" {
				return usage("--env %q: want KEY=VALUE", val)
			}
			if out.req.Env == nil {
				out.req.Env = map[string]string{}
			}
			out.req.Env[k] = v
		default:
			return usage("unknown flag %q", a)
		}
	}
	if out.id == "" {
		return usage("missing sandbox id")
	}
	if len(cmd) == 0 {
		return usage("missing command")
	}
	out.req.Command = strings.Join(cmd, " ")
	return out, nil
}

func execCmd(c *cli.Context) error {
	ea, err := parseExec(c.Args().Slice())
	if err != nil {
		return err
	}
	res, err := newClient(c).Exec(c.Context, ea.id, ea.req)
	if err != nil {
		return err
	}
	if ea.jsonOut {
		if err := printJSON(c.App.Writer, res); err != nil {
			return err
		}
	} else {
		c.App.Writer.Write(output(res.Stdout, res.StdoutBase64))
		c.App.ErrWriter.Write(output(res.Stderr, res.StderrBase64))
		if res.TimedOut {
			fmt.Fprintln(c.App.ErrWriter, "matrx: command timed out")
		}
	}
	if res.ExitCode != 0 {
		return cli.Exit("", res.ExitCode)
	}
	return nil
}

// output prefers the exact bytes when the daemon sent them base64-encoded.
func output(s, b64 string) []byte {
	if b64 != "" {
		if b, err := base64.StdEncoding.DecodeString(b64); err == nil {
			return b
		}
	}
	return []byte(s)
}

func remove(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("rm needs at least one sandbox id: %w", errdefs.ErrInvalidArgument)
	}
	cl := newClient(c)
	var failed bool
	for _, id := range c.Args().Slice() {
		if err := cl.Delete(c.Context, id, !c.Bool("force")); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "matrx: rm %s: %v\n", id, err)
			failed = true
			continue
		}
		fmt.Fprintln(c.App.Writer, id)
	}
	if failed {
		return cli.Exit("", 1)
	}
	return nil
}

func imageImport(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("image import needs one archive file: %w", errdefs.ErrInvalidArgument)
	}
	f, err := os.Open(c.Args().First())
	if err != nil {
		return err
	}
	defer f.Close()
	// An import of a large image can take minutes; no client-side deadline.
	res, err := newClient(c).ImportImage(context.WithoutCancel(c.Context), f)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, res)
	}
	for _, n := range res.Images {
		fmt.Fprintln(c.App.Writer, n)
	}
	return nil
}

func imageList(c *cli.Context) error {
	l, err := newClient(c).Images(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, l)
	}
	sort.Slice(l.Images, func(i, j int) bool { return l.Images[i].Name < l.Images[j].Name })
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDIGEST\tSIZE")
	for _, i := range l.Images {
		d := i.Digest
		if len(d) > 19 {
			d = d[:19]
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f MiB\n", i.Name, d, float64(i.Size)/(1<<20))
	}
	return tw.Flush()
}

func health(c *cli.Context) error {
	h, err := newClient(c).Health(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, h)
	}
	fmt.Fprintf(c.App.Writer, "status: %s\nactive sandboxes: %d\nuptime: %.0fs\n", h.Status, h.ActiveSandboxes, h.UptimeSeconds)
	return nil
}

func versionCmd(c *cli.Context) error {
	v, err := newClient(c).Version(c.Context)
	if err != nil {
		return err
	}
	out := map[string]string{"client": version.Version, "daemon": v.Version, "containerd": v.Containerd}
	if c.Bool("json") {
		return printJSON(c.App.Writer, out)
	}
	fmt.Fprintf(c.App.Writer, "client:     %s\ndaemon:     %s\ncontainerd: %s\n", out["client"], out["daemon"], out["containerd"])
	return nil
}

func storageStats(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("storage stats needs one user id: %w", errdefs.ErrInvalidArgument)
	}
	st, err := newClient(c).StorageStats(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, st)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIER\tOBJECTS\tBYTES")
	fmt.Fprintf(tw, "hot\t%d\t%d\n", st.Hot.Objects, st.Hot.Bytes)
	fmt.Fprintf(tw, "cold\t%d\t%d\n", st.Cold.Objects, st.Cold.Bytes)
	return tw.Flush()
}

func storageClean(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("storage clean needs one user id: %w", errdefs.ErrInvalidArgument)
	}
	if !c.Bool("yes") {
		return fmt.Errorf("this deletes every %s object of %s; pass --yes to confirm: %w", c.String("tier"), c.Args().First(), errdefs.ErrInvalidArgument)
	}
	res, err := newClient(c).CleanStorage(c.Context, c.Args().First(), c.String("tier"))
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, res)
	}
	fmt.Fprintf(c.App.Writer, "deleted %d %s objects of %s\n", res.Deleted, res.Tier, res.UserID)
	return nil
}

// doctorCommand checks the host without the daemon. Its flags mirror
// matrxd's, with the same MATRX_* twins, so that it checks what matrxd
// would use.
func doctorCommand(jsonFlag cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check that this host can run matrxd (no daemon needed); exits non-zero if a check fails",
		Flags: []cli.Flag{
			jsonFlag,
			&cli.StringFlag{Name: "containerd-address", Value: doctor.DefaultContainerdAddress, EnvVars: []string{"MATRX_CONTAINERD_ADDRESS"}},
			&cli.StringFlag{Name: "containerd-namespace", Value: doctor.DefaultContainerdNamespace, EnvVars: []string{"MATRX_CONTAINERD_NAMESPACE"}},
			&cli.StringFlag{Name: "state-dir", Value: doctor.DefaultStateDir, EnvVars: []string{"MATRX_STATE_DIR"}},
			&cli.StringFlag{Name: "socket", Usage: "matrxd API socket (default: the global --socket)"},
			&cli.StringFlag{Name: "socket-group", Value: doctor.DefaultSocketGroup, EnvVars: []string{"MATRX_SOCKET_GROUP"}},
			&cli.StringFlag{Name: "image", Value: doctor.DefaultImage, EnvVars: []string{"MATRX_IMAGE", "MATRX_SANDBOX_IMAGE"}, Usage: "default sandbox image"},
			&cli.StringFlag{Name: "s3-bucket", EnvVars: []string{"MATRX_S3_BUCKET"}, Usage: "bucket to check (empty: local storage)"},
			&cli.StringFlag{Name: "s3-region", Value: "us-east-1", EnvVars: []string{"MATRX_S3_REGION"}},
			&cli.StringFlag{Name: "s3-endpoint", EnvVars: []string{"MATRX_S3_ENDPOINT"}, Usage: "S3-compatible endpoint URL (implies path-style addressing)"},
			&cli.BoolFlag{Name: "s3-path-style", EnvVars: []string{"MATRX_S3_PATH_STYLE"}, Usage: "path-style addressing (default on when --s3-endpoint is set)"},
		},
		Action: doctorCmd,
	}
}

func doctorCmd(c *cli.Context) error {
	socket := c.String("socket")
	if socket == "" && len(c.Lineage()) > 1 {
		socket = c.Lineage()[1].String("socket")
	}
	cfg := doctor.Config{
		ContainerdAddress:   c.String("containerd-address"),
		ContainerdNamespace: c.String("containerd-namespace"),
		StateDir:            c.String("state-dir"),
		Socket:              socket,
		SocketGroup:         c.String("socket-group"),
		Image:               c.String("image"),
		S3: doctor.S3Config{
			Bucket: c.String("s3-bucket"), Region: c.String("s3-region"), Endpoint: c.String("s3-endpoint"),
			PathStyle: c.Bool("s3-path-style") || (c.String("s3-endpoint") != "" && !c.IsSet("s3-path-style")),
		},
	}
	rep := doctor.Run(c.Context, cfg)
	var err error
	if c.Bool("json") {
		err = printJSON(c.App.Writer, rep)
	} else {
		err = rep.WriteTable(c.App.Writer)
	}
	if err != nil {
		return err
	}
	if !rep.OK {
		return cli.Exit(fmt.Sprintf("matrx doctor: %d check(s) failed", rep.Count(doctor.Fail)), 1)
	}
	return nil
}
