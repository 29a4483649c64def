package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/daemon"
	"github.com/roam-vpn/roam/tun"
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
					// And its DNS settings (a rewritten resolv.conf).
					restored, err := tun.RestoreDNS(tun.DefaultStateDir)
					if err != nil && !errors.Is(err, os.ErrPermission) {
						return fmt.Errorf("disconnect: %w", err)
					}
					if len(restored) > 0 {
						fmt.Fprintln(c.App.Writer, "restored leftover DNS settings")
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
