package main

import (
	"runtime"
	"testing"
)

func TestDataplaneProcs(t *testing.T) {
	for _, tt := range []struct{ cpus, want int }{
		{1, 1}, {2, 1}, {3, 1}, {4, 2}, {16, 8},
	} {
		if got := dataplaneProcs(tt.cpus); got != tt.want {
			t.Errorf("dataplaneProcs(%d) = %d, want %d", tt.cpus, got, tt.want)
		}
	}
}

func TestSetDataplaneProcs(t *testing.T) {
	orig := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(orig)
	for _, tt := range []struct {
		name, env   string
		start, want int
	}{
		{"halved", "", 4, 2},
		{"at least one", "", 1, 1},
		{"the user's GOMAXPROCS stands", "3", 4, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			runtime.GOMAXPROCS(tt.start)
			setDataplaneProcs(func(k string) string {
				if k == "GOMAXPROCS" {
					return tt.env
				}
				return ""
			})
			if got := runtime.GOMAXPROCS(0); got != tt.want {
				t.Errorf("GOMAXPROCS %d after starting at %d with GOMAXPROCS=%q, want %d", got, tt.start, tt.env, tt.want)
			}
		})
	}
}
