package main

import (
	"log/slog"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/daemon"
)

// daemonCommand is what `roam connect` starts when no daemon listens.
func daemonCommand(e engines) *cli.Command {
	return &cli.Command{
		Name:   "daemon",
		Usage:  "run the connection daemon (started by connect)",
		Hidden: true,
		Flags: []cli.Flag{
			socketFlag(),
			&cli.BoolFlag{Name: "auto-exit", Usage: "exit when the last connection ends"},
		},
		Action: func(c *cli.Context) error {
			stopProfile, err := startCPUProfile(os.Getenv)
			if err != nil {
				return err
			}
			defer stopProfile()
			log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
			d, err := daemon.Start(daemon.Options{
				Socket:   c.String("socket"),
				Dial:     e.dial,
				AutoExit: c.Bool("auto-exit"),
				Log:      log,
			})
			if err != nil {
				return err
			}
			log.Info("daemon listening", "socket", c.String("socket"), "auto_exit", c.Bool("auto-exit"))
			err = d.Run(c.Context)
			log.Info("daemon stopped")
			return err
		},
	}
}
