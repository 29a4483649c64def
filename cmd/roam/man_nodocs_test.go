//go:build urfave_cli_no_docs

package main

import (
	"strings"
	"testing"
)

// The binary that ships has no page generator; roam man says so in one
// line and where the pages are instead of printing nothing.
func TestManWithoutGenerator(t *testing.T) {
	ctx := testCtx(t)
	for _, args := range [][]string{{"man"}, {"man", "docs/roam.toml.5.md"}} {
		r := roam(ctx, args...)
		if r.code != exitFailure || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "make man") {
			t.Errorf("roam %s: %+v, want exit %d and one line pointing to make man", strings.Join(args, " "), r, exitFailure)
		}
	}
}
