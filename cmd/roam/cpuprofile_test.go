package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartCPUProfile(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		path    string // value of ROAM_CPUPROFILE
		wantErr bool
		written bool // a gzip-compressed profile exists afterwards
	}{
		{name: "unset", path: ""},
		{name: "file", path: filepath.Join(dir, "cpu.pprof"), written: true},
		{name: "unwritable", path: filepath.Join(dir, "missing", "cpu.pprof"), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == cpuProfileEnv {
					return tt.path
				}
				return ""
			}
			stop, err := startCPUProfile(getenv)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), cpuProfileEnv) {
					t.Fatalf("err = %v, want one naming %s", err, cpuProfileEnv)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			stop()
			if !tt.written {
				if ents, _ := os.ReadDir(dir); len(ents) != 0 {
					t.Fatalf("files written without %s: %v", cpuProfileEnv, ents)
				}
				return
			}
			b, err := os.ReadFile(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
				t.Fatalf("profile is not gzip-compressed protobuf: % x", b[:min(len(b), 8)])
			}
		})
	}
}
