//go:build urfave_cli_no_docs

package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// manCommand, in the binary that ships, only says where the pages come
// from: this build leaves out urfave's Markdown output and go-md2man so
// that every start of roam (each connect, the daemon it spawns) skips
// their package initialisation. make man renders the pages from a build
// without the tag (man.go).
func manCommand() *cli.Command {
	return &cli.Command{
		Name:      "man",
		Usage:     "print the roam(8) manual page, or convert a Markdown page, as roff",
		ArgsUsage: "[PAGE.md]",
		Hidden:    true,
		Action: func(*cli.Context) error {
			return errors.New("man: this roam is built without the man page generator (tag urfave_cli_no_docs); read the installed pages (man roam, man roam.toml) or render them with make man")
		},
	}
}
