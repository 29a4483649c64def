package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/daemon"
)

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show connections",
		ArgsUsage: "[PROFILE]",
		Flags: []cli.Flag{
			socketFlag(),
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array of connections"},
		},
		BashComplete: completeProfiles,
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usageError(c, "want at most one PROFILE")
			}
			name := c.Args().First()
			st, err := daemon.Client{Socket: c.String("socket")}.Status(c.Context, name)
			if errors.Is(err, daemon.ErrNoDaemon) {
				if name != "" {
					return fmt.Errorf("%s: not connected", name)
				}
				// No daemon simply means no connections.
				st, err = []daemon.Status{}, nil
			}
			if err != nil {
				return socketDenied(c.String("socket"), err)
			}
			if c.Bool("json") {
				if st == nil {
					st = []daemon.Status{}
				}
				b, err := json.MarshalIndent(st, "", "  ")
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(c.App.Writer, "%s\n", b)
				return err
			}
			return printStatus(c.App.Writer, st, time.Now())
		},
	}
}

// printStatus writes the table people read.
func printStatus(w io.Writer, st []daemon.Status, now time.Time) error {
	if len(st) == 0 {
		_, err := fmt.Fprintln(w, "no connections")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tGATEWAY\tLOCAL\tREMOTE\tINTERFACE\tVIRTUAL IP\tNAT\tMOBIKE\tUP")
	for _, s := range st {
		up := "-"
		if !s.EstablishedAt.IsZero() {
			up = now.Sub(s.EstablishedAt).Truncate(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			s.Name, s.State, dash(s.Gateway), dash(s.Local), dash(s.Remote), dash(s.Interface),
			dash(s.VirtualIP), yesNo(s.NAT), yesNo(s.MOBIKE), up)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, s := range st {
		var lines []string
		if line := healthLine(s, now); line != "" {
			lines = append(lines, line)
		}
		if s.ReconnectAttempt > 0 {
			lines = append(lines, fmt.Sprintf("  reconnect attempt %d, last error: %s", s.ReconnectAttempt, dash(s.LastError)))
		}
		if s.IKESPIi != "" {
			lines = append(lines, fmt.Sprintf("  IKE SA %s_i %s_r, path changes %d", s.IKESPIi, s.IKESPIr, s.PathChanges))
		}
		if s.PathMTU > 0 {
			lines = append(lines, fmt.Sprintf("  path MTU %d (inner), %d ICMP too big sent, %d TCP SYNs clamped", s.PathMTU, s.ICMPTooBig, s.MSSClamped))
		}
		if line := reauthLine(s, now); line != "" {
			lines = append(lines, line)
		}
		for _, ch := range s.Children {
			var to string
			if len(ch.RemoteTS) > 0 {
				// Which networks it carries tells several Child SAs apart.
				to = " to " + strings.Join(ch.RemoteTS, ",")
			}
			lines = append(lines, fmt.Sprintf("  child %s (in %s, out %s)%s: in %d bytes/%d packets, out %d bytes/%d packets",
				ch.Proposal, ch.SPIIn, ch.SPIOut, to, ch.BytesIn, ch.PacketsIn, ch.BytesOut, ch.PacketsOut))
		}
		if d := s.Drops; d != nil && *d != (daemon.Drops{}) {
			var rs []string
			for _, r := range d.Nonzero() {
				rs = append(rs, fmt.Sprintf("%d %s", r.Count, r.Reason))
			}
			lines = append(lines, "  dropped: "+strings.Join(rs, ", "))
		}
		if len(lines) > 0 {
			if _, err := fmt.Fprintf(w, "%s:\n%s\n", s.Name, strings.Join(lines, "\n")); err != nil {
				return err
			}
		}
	}
	return nil
}

// healthLine says whether traffic flows: the health state and why, when
// something last came from the gateway, and the path's RTT.
func healthLine(s daemon.Status, now time.Time) string {
	if s.Health == "" {
		return ""
	}
	line := "  health " + s.Health
	if s.HealthReason != "" {
		line += " (" + s.HealthReason + ")"
	}
	ago := func(t *time.Time) string {
		if t == nil {
			return "never"
		}
		return now.Sub(*t).Round(100*time.Millisecond).String() + " ago"
	}
	line += fmt.Sprintf("; last received: ESP %s, IKE %s", ago(s.LastInboundESP), ago(s.LastInboundIKE))
	if s.RTTSamples > 0 {
		line += fmt.Sprintf("; RTT %.1f ms", s.RTTMS)
	}
	return line
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// reauthLine says how often the connection reauthenticated and when it
// will next ("" when it never does).
func reauthLine(s daemon.Status, now time.Time) string {
	if s.Reauthentications == 0 && s.NextReauth == nil {
		return ""
	}
	line := fmt.Sprintf("  reauthenticated %d times", s.Reauthentications)
	if s.Reauthentications == 1 {
		line = "  reauthenticated once"
	}
	if s.NextReauth != nil {
		line += fmt.Sprintf(", next in %v", max(s.NextReauth.Sub(now), 0).Truncate(time.Second))
	}
	return line
}
