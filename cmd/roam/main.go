// Command roam is the VPN client (and, with `roam gateway`, the responder).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/daemon"
	"github.com/roam-vpn/roam/internal/suggest"
)

// defaultConfig is the profile file when neither --config nor ROAM_CONFIG
// names one.
const defaultConfig = "/etc/roam/roam.toml"

// engines are what actually moves packets; tests substitute fakes.
type engines struct {
	dial    daemon.DialFunc
	gateway daemon.GatewayFunc
	// presend does a connection's first steps in this process while the
	// daemon that connect starts starts (tunnel.Presend); nil: none.
	presend func(ctx context.Context, p *config.Profile) (handoff, error)
}

// handoff is what presend started, to pass to the daemon
// (tunnel.Handoff).
type handoff interface {
	Marshal() (state []byte, files []*os.File, err error)
	Close()
}

func main() {
	// SIGHUP (the terminal of `roam connect --foreground` went away, or
	// kill -HUP) stops as cleanly as SIGTERM: every change is undone.
	// There is no reload: connect reads the profile file afresh anyway.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := run(ctx, os.Args, os.Stdout, os.Stderr, realEngines())
	stop()
	os.Exit(code)
}

// run executes the CLI and returns the process exit code. Errors are
// printed as one line, "roam: <what>: <why>".
func run(ctx context.Context, args []string, stdout, stderr io.Writer, e engines) int {
	app := newApp(stdout, stderr, e)
	if err := app.RunContext(ctx, flagsFirst(app, args)); err != nil {
		fmt.Fprintf(stderr, "roam: %v\n", err)
		return exitCode(err)
	}
	return exitOK
}

func newApp(stdout, stderr io.Writer, e engines) *cli.App {
	app := &cli.App{
		Name:      "roam",
		Usage:     "IKEv2/MOBIKE VPN client that follows you across networks",
		UsageText: "roam [--version] COMMAND [flags] [arguments]",
		Description: "roam connects to IKEv2 gateways (strongSwan, libreswan, roam gateway) with a userspace\n" +
			"ESP dataplane over a TUN device, and keeps the tunnel up across Wi-Fi, Ethernet and\n" +
			"cellular with MOBIKE (RFC 4555). Profiles live in /etc/roam/roam.toml (see roam.toml(5)).",
		Writer:               stdout,
		ErrWriter:            stderr,
		HideHelpCommand:      true,
		HideVersion:          true, // our --version prints versionLine
		EnableBashCompletion: true,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "version", Usage: "print the version, commit and Go version"},
		},
		// Errors are printed once, by run, in our own format.
		ExitErrHandler: func(*cli.Context, error) {},
		Action:         rootAction,
		Commands: []*cli.Command{
			connectCommand(e),
			disconnectCommand(),
			statusCommand(),
			eventsCommand(),
			checkCommand(),
			gatewayCommand(e),
			versionCommand(),
			completionCommand(),
			manCommand(),
			daemonCommand(e),
		},
	}
	app.OnUsageError = onUsageError
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.OnUsageError = onUsageError
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
	return app
}

// rootAction runs for `roam` without a command: --version, help, or an
// unknown command with a suggestion.
func rootAction(c *cli.Context) error {
	if c.Bool("version") {
		_, err := fmt.Fprintln(c.App.Writer, versionLine())
		return err
	}
	if c.NArg() == 0 || c.Args().First() == "help" {
		return cli.ShowAppHelp(c)
	}
	typed := c.Args().First()
	if s := suggest.Closest(typed, commandNames(c.App.Commands)); s != "" {
		return usageError(c, "unknown command %q; did you mean %q?", typed, s)
	}
	return usageError(c, "unknown command %q", typed)
}

// onUsageError makes flag parsing errors usage errors (exit 2) with a
// suggestion for a mistyped flag.
func onUsageError(c *cli.Context, err error, _ bool) error {
	return unknownFlag(c, err)
}

func socketFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "socket",
		Usage:   "control socket of the daemon",
		EnvVars: []string{"ROAM_SOCKET"},
		Value:   daemon.DefaultSocket,
	}
}

// gatewaySocketFlag is the gateway's control socket; usage says what the
// command uses it for.
func gatewaySocketFlag(usage string) *cli.StringFlag {
	return &cli.StringFlag{Name: "socket", Usage: usage, Value: daemon.DefaultGatewaySocket}
}

func configFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "config",
		Usage:   "profile file",
		EnvVars: []string{"ROAM_CONFIG"},
		Value:   defaultConfig,
	}
}
