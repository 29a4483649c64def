package main

import (
	"testing"
	"time"

	"github.com/roam-vpn/roam/daemon"
)

func TestReauthLine(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	next := now.Add(7*time.Hour + 59*time.Minute + 30*time.Second + 500*time.Millisecond)
	past := now.Add(-time.Second)
	tests := []struct {
		name string
		st   daemon.Status
		want string
	}{
		{name: "never", want: ""},
		{name: "scheduled", st: daemon.Status{NextReauth: &next}, want: "  reauthenticated 0 times, next in 7h59m30s"},
		{name: "once", st: daemon.Status{Reauthentications: 1, NextReauth: &next}, want: "  reauthenticated once, next in 7h59m30s"},
		{name: "due", st: daemon.Status{Reauthentications: 3, NextReauth: &past}, want: "  reauthenticated 3 times, next in 0s"},
		{name: "refused since", st: daemon.Status{Reauthentications: 2}, want: "  reauthenticated 2 times"},
	}
	for _, tt := range tests {
		if got := reauthLine(tt.st, now); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
