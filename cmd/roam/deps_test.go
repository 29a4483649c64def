package main

import (
	"os/exec"
	"strings"
	"testing"
)

// shippedTags are the build tags of the binary that ships (Makefile's
// TAGS, scripts/lab.BuildRoam).
const shippedTags = "urfave_cli_no_docs"

// The binary that ships leaves out the man page generator: blackfriday's
// tables alone cost each start of roam about a millisecond of package
// initialisation, paid twice by a connect that spawns the daemon.
func TestShippedBuildHasNoManGenerator(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool:", err)
	}
	tests := []struct {
		tags    string
		present bool
	}{
		{shippedTags, false},
		{"", true}, // make man's build: the check itself can find them
	}
	for _, tt := range tests {
		out, err := exec.Command(goTool, "list", "-deps", "-tags", tt.tags, ".").Output()
		if err != nil {
			t.Fatalf("go list -deps -tags %q: %v", tt.tags, err)
		}
		deps := "\n" + string(out)
		for _, pkg := range []string{"github.com/cpuguy83/go-md2man/v2/md2man", "github.com/russross/blackfriday/v2"} {
			if got := strings.Contains(deps, "\n"+pkg+"\n"); got != tt.present {
				t.Errorf("tags %q: %s in the dependencies: %v, want %v", tt.tags, pkg, got, tt.present)
			}
		}
	}
}
