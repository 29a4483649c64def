package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/daemon"
)

func eventsCommand() *cli.Command {
	return &cli.Command{
		Name:  "events",
		Usage: "stream connection events until interrupted",
		Flags: []cli.Flag{
			socketFlag(),
			&cli.BoolFlag{Name: "json", Usage: "one JSON object a line"},
		},
		Action: noArgs(func(c *cli.Context) error {
			w := c.App.Writer
			asJSON := c.Bool("json")
			var werr error
			err := daemon.Client{Socket: c.String("socket")}.Events(c.Context, func(ev daemon.Event) {
				if werr != nil {
					return
				}
				if asJSON {
					werr = writeJSONLine(w, ev)
				} else {
					_, werr = fmt.Fprintln(w, formatEvent(ev, true))
				}
			})
			return errors.Join(socketDenied(c.String("socket"), err), werr)
		}),
	}
}

func writeJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// formatEvent renders ev for people: "corp: path-changed from=... to=...".
func formatEvent(ev daemon.Event, withTime bool) string {
	var b strings.Builder
	if withTime {
		b.WriteString(ev.Time.Local().Format("15:04:05.000 "))
	}
	fmt.Fprintf(&b, "%s: %s", ev.Profile, ev.Event)
	for _, kv := range [][2]string{
		{"from", ev.From}, {"to", ev.To}, {"interface", ev.Interface},
		{"virtual_ip", ev.VirtualIP}, {"proposal", ev.Proposal},
	} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	if ev.TookMS != 0 {
		fmt.Fprintf(&b, " took=%dms", ev.TookMS)
	}
	if ev.Reason != "" {
		fmt.Fprintf(&b, " reason=%q", ev.Reason)
	}
	return b.String()
}
