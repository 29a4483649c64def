package main

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/roam-vpn/roam/daemon"
)

func TestNewLogger(t *testing.T) {
	tests := []struct {
		level     string
		debug     bool // debug records written
		info      bool
		wantUsage bool
	}{
		{level: "", info: true},
		{level: "info", info: true},
		{level: "debug", debug: true, info: true},
		{level: "DEBUG", debug: true, info: true},
		{level: "warn"},
		{level: "error"},
		{level: "loud", wantUsage: true},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		log, closeLog, err := newLogger(&b, tt.level)
		if tt.wantUsage {
			if exitCode(err) != exitUsage || !strings.Contains(err.Error(), `--log-level: "loud" is not debug, info, warn or error`) {
				t.Errorf("%q: %v", tt.level, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.level, err)
		}
		log.Debug("d")
		log.Info("i")
		closeLog()
		if got := strings.Contains(b.String(), "level=DEBUG"); got != tt.debug {
			t.Errorf("%q: debug written %v, want %v:\n%s", tt.level, got, tt.debug, b.String())
		}
		if got := strings.Contains(b.String(), "level=INFO"); got != tt.info {
			t.Errorf("%q: info written %v, want %v", tt.level, got, tt.info)
		}
	}
}

// log_level in the profile file reaches the daemon connect starts, and
// --log-level overrides it.
func TestDaemonLogLevel(t *testing.T) {
	t.Setenv(fakeDaemonEnv, "1")
	tests := []struct {
		file, flag string
		debug      bool
	}{
		{"", "", false},
		{"debug", "", true},
		{"debug", "info", false},
		{"", "debug", true},
	}
	for _, tt := range tests {
		cfg, socket := setup(t)
		if tt.file != "" {
			if err := os.WriteFile(cfg, []byte("log_level = \""+tt.file+"\"\n"+readFile(cfg)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		ctx := testCtx(t)
		args := []string{"connect", "corp", "--socket", socket, "--config", cfg}
		if tt.flag != "" {
			args = append(args, "--log-level", tt.flag)
		}
		if r := roam(ctx, args...); r.code != 0 {
			t.Fatalf("%v: %+v", args, r)
		}
		roam(ctx, "disconnect", "corp", "--socket", socket)
		waitGone(t, socket)
		logText := readFile(daemon.LogFile(socket))
		if got := strings.Contains(logText, "level=DEBUG msg=\"daemon settings\""); got != tt.debug {
			t.Errorf("file %q flag %q: debug logged %v, want %v:\n%s", tt.file, tt.flag, got, tt.debug, logText)
		}
	}
	cfg, _ := setup(t)
	os.WriteFile(cfg, []byte("log_level = \"loud\"\n"+readFile(cfg)), 0o600)
	if r := roam(testCtx(t), "check", "--config", cfg); r.code != exitFailure || !strings.Contains(r.stdout, `log_level: "loud" is not debug, info, warn or error`) {
		t.Errorf("check with a bad log_level: %+v", r)
	}
}
