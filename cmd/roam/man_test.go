//go:build !urfave_cli_no_docs

package main

import (
	"os/exec"
	"strings"
	"testing"
)

func TestManPage(t *testing.T) {
	ctx := testCtx(t)
	r := roam(ctx, "man")
	if r.code != 0 {
		t.Fatalf("man: %+v", r)
	}
	for _, want := range []string{".TH roam 8", "EXIT STATUS", "ROAM_CONFIG", "roam.toml", "connect", "check", "completion"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("roam(8) lacks %q", want)
		}
	}
	if strings.Contains(r.stdout, "daemon listening") || strings.Contains(r.stdout, "\n.SH man") {
		t.Error("roam(8) documents a hidden command")
	}
	// Where groff is installed, the page must render without warnings.
	if groff, err := exec.LookPath("groff"); err == nil {
		cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
		cmd.Stdin = strings.NewReader(r.stdout)
		if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff: %v\n%s", err, out)
		}
	}
}

// roam.toml(5) comes from its Markdown source through the same command.
func TestManPageFromMarkdown(t *testing.T) {
	ctx := testCtx(t)
	r := roam(ctx, "man", "../../docs/roam.toml.5.md")
	if r.code != 0 {
		t.Fatalf("man docs/roam.toml.5.md: %+v", r)
	}
	for _, want := range []string{".TH roam.toml 5", ".SH NAME", "psk_file"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("roam.toml(5) lacks %q", want)
		}
	}
	missing := roam(ctx, "man", "/nonexistent/page.md")
	if missing.code != exitConfig || strings.Count(missing.stderr, "\n") != 1 || !strings.Contains(missing.stderr, "/nonexistent/page.md") {
		t.Errorf("man of a missing page: %+v, want exit %d and one line naming it", missing, exitConfig)
	}
}
