package main

import (
	"context"
	"log/slog"
	"os"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/daemon"
	"github.com/roam-vpn/roam/internal/systemd"
)

// daemonCommand is what `roam connect` starts when no daemon listens, and
// what roam.service runs.
func daemonCommand(e engines) *cli.Command {
	return &cli.Command{
		Name:   "daemon",
		Usage:  "run the connection daemon (started by connect, or by roam.service)",
		Hidden: true,
		Flags: []cli.Flag{
			socketFlag(),
			configFlag(),
			logLevelFlag(),
			&cli.BoolFlag{Name: "auto-exit", Usage: "exit when the last connection ends"},
			&cli.StringFlag{Name: "socket-group", Usage: "group that may read status and events from the socket (default: socket_group in the profile file)"},
			// roam connect's readiness pipe (spawnDaemon): a byte is written
			// to this descriptor once the socket listens.
			&cli.IntFlag{Name: "ready-fd", Hidden: true},
		},
		Action: func(c *cli.Context) error {
			group, level := fileSettings(c.String("config"))
			if c.IsSet("socket-group") {
				group = c.String("socket-group")
			}
			if c.IsSet("log-level") {
				level = c.String("log-level")
			}
			log, stopServer, err := startServer(c.App.ErrWriter, level)
			if err != nil {
				return err
			}
			defer stopServer()
			d, err := daemon.Start(daemon.Options{
				Socket:      c.String("socket"),
				Dial:        e.dial,
				AutoExit:    c.Bool("auto-exit"),
				SocketGroup: group,
				Log:         log,
			})
			if err != nil {
				return err
			}
			tellReady(c.Int("ready-fd"), log)
			log.Info("daemon listening", "socket", c.String("socket"), "auto_exit", c.Bool("auto-exit"), "socket_group", group)
			log.Debug("daemon settings", "config", c.String("config"), "log_level", level, "pid", os.Getpid())
			// Under systemd (Type=notify): ready once the socket answers,
			// stopping as soon as the stop begins.
			if err := systemd.Notify("READY=1"); err != nil {
				log.Warn("telling systemd we are ready", "err", err)
			}
			// Once, and waited for: the AfterFunc's goroutine may still be
			// sending when Run returns, and a process that exits first
			// never sends it (TestSystemdUnits saw no STOPPING=1).
			stopping := sync.OnceFunc(func() { systemd.Notify("STOPPING=1") })
			stop := context.AfterFunc(c.Context, stopping)
			err = d.Run(c.Context)
			stop()
			stopping() // auto-exit: the stop began here; else it waits for the one under way
			log.Info("daemon stopped")
			return err
		},
	}
}

// tellReady writes the byte roam connect waits for into fd (0: none was
// given) and closes it, so no child of the daemon inherits it.
func tellReady(fd int, log *slog.Logger) {
	if fd <= 0 {
		return
	}
	f := os.NewFile(uintptr(fd), "ready")
	if f == nil {
		return
	}
	if _, err := f.Write([]byte{1}); err != nil {
		log.Warn("telling roam connect the daemon listens", "err", err)
	}
	f.Close()
}
