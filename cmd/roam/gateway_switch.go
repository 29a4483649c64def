package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/daemon"
)

// gatewaySwitchCommand is `roam gateway switch`: ask a running gateway to
// move one client to another of its addresses (SWITCH_TO_IP_ADDRESS).
func gatewaySwitchCommand() *cli.Command {
	return &cli.Command{
		Name:  "switch",
		Usage: "ask a client of the running gateway to move its SAs to another gateway address",
		Description: "The gateway sends SWITCH_TO_IP_ADDRESS from the address the client uses now; the client\n" +
			"answers to the new one and moves with UPDATE_SA_ADDRESSES. Only clients that advertised\n" +
			"the extension (MOBIKE_SUPPORTED with 'R') can be moved.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "peer", Usage: "the client: its identity, or its address[:port] as roam status shows it", Required: true},
			&cli.StringFlag{Name: "to", Usage: "the gateway address to move to (one of its listen addresses)", Required: true},
			gatewaySocketFlag("control socket of the gateway"),
		},
		Action: noArgs(func(c *cli.Context) error {
			socket := c.String("socket")
			// `roam gateway --socket PATH switch ...` names the socket
			// on the parent command.
			if !c.IsSet("socket") {
				for _, p := range c.Lineage()[1:] {
					if p.IsSet("socket") {
						socket = p.String("socket")
						break
					}
				}
			}
			client := daemon.Client{Socket: socket}
			res, err := client.Switch(c.Context, c.String("peer"), c.String("to"))
			if errors.Is(err, daemon.ErrNoDaemon) {
				return fmt.Errorf("switch: no gateway listens on %s", socket)
			}
			if err != nil {
				if strings.HasPrefix(err.Error(), "switch: ") {
					return err
				}
				return fmt.Errorf("switch: %w", err)
			}
			_, err = fmt.Fprintf(c.App.Writer, "switched %s to %s in %d ms\n", res.Peer, res.To, res.TookMS)
			return err
		}),
	}
}
