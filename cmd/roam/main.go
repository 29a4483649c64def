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

	"github.com/roam-vpn/roam/daemon"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

// defaultConfig is the profile file when neither --config nor ROAM_CONFIG
// names one.
const defaultConfig = "/etc/roam/roam.toml"

// engines are what actually moves packets; tests substitute fakes.
type engines struct {
	dial    daemon.DialFunc
	gateway daemon.GatewayFunc
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr, realEngines())
	stop()
	os.Exit(code)
}

// run executes the CLI and returns the process exit code. Errors are
// printed as one line, "roam: <what>: <why>".
func run(ctx context.Context, args []string, stdout, stderr io.Writer, e engines) int {
	app := newApp(stdout, stderr, e)
	if err := app.RunContext(ctx, args); err != nil {
		fmt.Fprintf(stderr, "roam: %v\n", err)
		return 1
	}
	return 0
}

func newApp(stdout, stderr io.Writer, e engines) *cli.App {
	return &cli.App{
		Name:            "roam",
		Usage:           "IKEv2/MOBIKE VPN client that follows you across networks",
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		// Errors are printed once, by run, in our own format.
		ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{
			connectCommand(e),
			disconnectCommand(),
			statusCommand(),
			eventsCommand(),
			gatewayCommand(e),
			versionCommand(),
			daemonCommand(e),
		},
	}
}

func socketFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "socket",
		Usage:   "control socket of the daemon",
		EnvVars: []string{"ROAM_SOCKET"},
		Value:   daemon.DefaultSocket,
	}
}

func configFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "config",
		Usage:   "profile file",
		EnvVars: []string{"ROAM_CONFIG"},
		Value:   defaultConfig,
	}
}

// usageError is a command line that makes no sense.
func usageError(c *cli.Context, format string, args ...any) error {
	return fmt.Errorf("%s: %s (see roam %s --help)", c.Command.Name, fmt.Sprintf(format, args...), c.Command.Name)
}
