package main

import (
	"context"
	"errors"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/daemon"
	"github.com/roam-vpn/roam/internal/systemd"
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
			// Under systemd (roam-gateway.service, Type=notify): ready
			// once the engine listens, stopping as soon as the stop begins.
			// Once, and waited for before the process exits (as the
			// daemon's).
			stopping := sync.OnceFunc(func() { systemd.Notify("STOPPING=1") })
			stop := context.AfterFunc(c.Context, stopping)
			defer func() {
				stop()
				stopping()
			}()
			err = daemon.ServeGateway(c.Context, g, daemon.GatewayOptions{
				Socket: c.String("socket"),
				Run:    e.gateway,
				Log:    log,
				Ready: func() {
					if err := systemd.Notify("READY=1"); err != nil {
						log.Warn("telling systemd we are ready", "err", err)
					}
				},
			})
			log.Info("gateway stopped")
			return err
		}),
	}
}
