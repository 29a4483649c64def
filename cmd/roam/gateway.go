package main

import (
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/daemon"
)

func gatewayCommand(e engines) *cli.Command {
	return &cli.Command{
		Name:  "gateway",
		Usage: "run the responder in the foreground",
		Flags: []cli.Flag{
			// Not Required: urfave checks that before it dispatches to
			// a subcommand, and `gateway switch` needs no file.
			&cli.StringFlag{Name: "config", Usage: "gateway file"},
			gatewaySocketFlag("control socket for status and events"),
			logLevelFlag(),
		},
		Subcommands: []*cli.Command{gatewaySwitchCommand()},
		Action: noArgs(func(c *cli.Context) error {
			if c.String("config") == "" {
				return usageError(c, "--config FILE is required")
			}
			g, err := config.LoadGateway(c.String("config"))
			if err != nil {
				return withCode(exitConfig, err)
			}
			if e.gateway == nil {
				return errors.New("gateway: this build has no gateway engine")
			}
			log, stopServer, err := startServer(c.App.ErrWriter, c.String("log-level"))
			if err != nil {
				return err
			}
			defer stopServer()
			log.Info("gateway starting", "listen", g.Listen, "socket", c.String("socket"))
			err = daemon.ServeGateway(c.Context, g, daemon.GatewayOptions{
				Socket: c.String("socket"),
				Run:    e.gateway,
				Log:    log,
			})
			log.Info("gateway stopped")
			return err
		}),
	}
}
