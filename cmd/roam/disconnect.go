package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/daemon"
)

func disconnectCommand() *cli.Command {
	return &cli.Command{
		Name:      "disconnect",
		Usage:     "disconnect a profile, or every one with --all",
		ArgsUsage: "PROFILE | --all",
		Flags: []cli.Flag{
			socketFlag(),
			&cli.BoolFlag{Name: "all", Usage: "disconnect every connection"},
		},
		BashComplete: completeProfiles,
		Action: func(c *cli.Context) error {
			all := c.Bool("all")
			if all && c.NArg() != 0 || !all && c.NArg() != 1 {
				return usageError(c, "want one PROFILE or --all")
			}
			client := daemon.Client{Socket: c.String("socket")}
			if all {
				names, err := client.DisconnectAll(c.Context)
				if errors.Is(err, daemon.ErrNoDaemon) {
					// No daemon: a killed one may have left policy
					// rules, routes, its TUN device and its lockdown
					// (which fails closed until lifted here).
					undone, err := daemon.RecoverLeftovers(daemon.StateDir(client.Socket))
					for _, u := range undone {
						fmt.Fprintf(c.App.Writer, "removed leftover %s\n", u)
					}
					if err != nil {
						return fmt.Errorf("disconnect: %w", err)
					}
					return nil
				}
				for _, n := range names {
					fmt.Fprintf(c.App.Writer, "%s: disconnected\n", n)
				}
				if err != nil {
					return fmt.Errorf("disconnect: %w", err)
				}
				return nil
			}
			name := c.Args().First()
			err := client.Disconnect(c.Context, name)
			if errors.Is(err, daemon.ErrNoDaemon) {
				return fmt.Errorf("disconnect %s: not connected", name)
			}
			if err != nil {
				return fmt.Errorf("disconnect %s: %w", name, err)
			}
			_, err = fmt.Fprintf(c.App.Writer, "%s: disconnected\n", name)
			return err
		},
	}
}
