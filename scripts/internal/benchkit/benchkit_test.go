package benchkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFlagsEnv(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
		err  string
	}{
		{name: "default", want: "10"},
		{name: "env", env: map[string]string{"REPS": "2"}, want: "2"},
		{name: "flag beats env", args: []string{"-reps", "3"}, env: map[string]string{"REPS": "2"}, want: "3"},
		{name: "empty env is unset", env: map[string]string{"REPS": ""}, want: "10"},
		{name: "stray argument", args: []string{"now"}, err: `unexpected argument "now"`},
		{name: "unknown flag", args: []string{"-nope"}, err: "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := NewFlags("bench-test", func(k string) string { return tt.env[k] })
			f.SetOutput(new(strings.Builder))
			reps := f.Env("reps", "REPS", "10", "repetitions")
			err := f.Parse(tt.args)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || *reps != tt.want {
				t.Fatalf("reps %q, err %v; want %q", *reps, err, tt.want)
			}
		})
	}
}

func TestInt(t *testing.T) {
	tests := []struct {
		s       string
		lo, hi  int
		want    int
		wantErr string
	}{
		{s: "3", lo: 1, want: 3},
		{s: "0", lo: 1, wantErr: `REPS/-reps "0": want a positive integer`},
		{s: "x", lo: 1, wantErr: "want a positive integer"},
		{s: "1", lo: 2, wantErr: "want an integer of at least 2"},
		{s: "50", lo: 1, hi: 50, want: 50},
		{s: "51", lo: 1, hi: 50, wantErr: "want an integer from 1 to 50"},
	}
	for _, tt := range tests {
		got, err := Int("REPS/-reps", tt.s, tt.lo, tt.hi)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Int(%q, %d, %d) err %v, want %q", tt.s, tt.lo, tt.hi, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Int(%q, %d, %d) = %d, %v; want %d", tt.s, tt.lo, tt.hi, got, err, tt.want)
		}
	}
}

func TestBool(t *testing.T) {
	for s, want := range map[string]bool{"1": true, "true": true, "yes": true, "0": false, "false": false, "no": false} {
		if got, err := Bool("COUNTS/-counts", s); err != nil || got != want {
			t.Errorf("Bool(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	if _, err := Bool("COUNTS/-counts", "maybe"); err == nil || !strings.Contains(err.Error(), "COUNTS/-counts") {
		t.Errorf("Bool(maybe) err %v, want one naming COUNTS/-counts", err)
	}
}

func TestParseDurations(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		zeroOK  bool
		want    time.Duration
		wantErr bool
	}{
		{name: "duration", value: "5ms", want: 5 * time.Millisecond},
		{name: "zero allowed", value: "0", zeroOK: true},
		{name: "zero refused", value: "0s", wantErr: true},
		{name: "negative", value: "-1s", zeroOK: true, wantErr: true},
		{name: "not a duration", value: "soon", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := time.Hour // overwritten on success, kept on error
			err := ParseDurations(Duration{Label: "BOUND/-bound", Value: tt.value, To: &got, ZeroOK: tt.zeroOK})
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "BOUND/-bound") || got != time.Hour {
					t.Fatalf("err %v, value %v; want an error naming BOUND/-bound", err, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestMS(t *testing.T) {
	if got := MS(1500 * time.Microsecond); got != "1.5 ms" {
		t.Errorf("MS = %q", got)
	}
	if got := MSF(1500 * time.Microsecond); got != 1.5 {
		t.Errorf("MSF = %v", got)
	}
}

func TestAddLogFile(t *testing.T) {
	dir := t.TempDir()
	written := filepath.Join(dir, "roam.log")
	if err := os.WriteFile(written, []byte("line 1\nline 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{name: "written", path: written, want: "line 1\nline 2\n"},
		{name: "not written yet", path: filepath.Join(dir, "none.log"), want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs := map[string]string{"gateway.out": "kept"}
			AddLogFile(logs, "roam.log", tt.path)
			got, ok := logs["roam.log"]
			if !ok || got != tt.want || logs["gateway.out"] != "kept" {
				t.Fatalf("logs %q; want roam.log %q beside gateway.out", logs, tt.want)
			}
		})
	}
}
