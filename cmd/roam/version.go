package main

import (
	"fmt"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// version and commit are set at build time (see the Makefile):
//
//	-ldflags "-X main.version=1.2.3 -X main.commit=0123abcd"
//
// Without them, the module's build information fills in what it knows.
var (
	version = "dev"
	commit  = ""
)

// versionLine is what `roam version` and `roam --version` print:
// "roam <version> (<commit>, <go version>)".
func versionLine() string {
	v, c, goVersion := version, commit, "unknown Go"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && c == "" {
				c = s.Value
				if len(c) > 12 {
					c = c[:12]
				}
			}
		}
	}
	if c == "" {
		c = "unknown commit"
	}
	return fmt.Sprintf("roam %s (%s, %s)", v, c, goVersion)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print roam's version, commit and Go version",
		Action: noArgs(func(c *cli.Context) error {
			_, err := fmt.Fprintln(c.App.Writer, versionLine())
			return err
		}),
	}
}
