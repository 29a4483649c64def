package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/internal/systemd"
)

// logLevels are the values of --log-level and log_level.
var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError,
}

func logLevelFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "log-level",
		Usage:   "debug, info, warn or error (default: log_level in the profile file, else info)",
		EnvVars: []string{"ROAM_LOG_LEVEL"},
	}
}

// startServer starts what a long-running command (the daemon, the
// gateway) runs under: its number of Ps (setDataplaneProcs), the CPU
// profile the environment asks for and the logger at level. stop closes the logger, then ends the profile.
func startServer(w io.Writer, level string) (log *slog.Logger, stop func(), err error) {
	setDataplaneProcs(os.Getenv)
	stopProfile, err := startCPUProfile(os.Getenv)
	if err != nil {
		return nil, nil, err
	}
	log, closeLog, err := newLogger(w, level)
	if err != nil {
		stopProfile()
		return nil, nil, err
	}
	return log, func() { closeLog(); stopProfile() }, nil
}

// newLogger logs at level ("" is info) to w, or to the journal with
// priorities and one field per attribute when w is a stderr that systemd
// connected to the journal. close releases the journal connection.
func newLogger(w io.Writer, level string) (log *slog.Logger, close func(), err error) {
	lvl := slog.LevelInfo
	if level != "" {
		var ok bool
		if lvl, ok = logLevels[strings.ToLower(level)]; !ok {
			return nil, nil, withCode(exitUsage, fmt.Errorf("--log-level: %q is not debug, info, warn or error", level))
		}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	if f, ok := w.(*os.File); ok && f == os.Stderr && systemd.StderrIsJournal() {
		if h, err := systemd.NewJournalHandler(systemd.JournalSocket, "ROAM_", opts); err == nil {
			return slog.New(h), func() { h.Close() }, nil
		}
	}
	return slog.New(slog.NewTextHandler(w, opts)), func() {}, nil
}

// fileSettings are the profile file's top-level settings the daemon needs,
// when the file is there to read: a daemon started by systemd has no
// profile to start from.
func fileSettings(path string) (socketGroup, logLevel string) {
	f, err := config.ReadProfiles(path)
	if err != nil {
		return "", ""
	}
	return f.SocketGroup, f.LogLevel
}
