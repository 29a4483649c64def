package main

import (
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/internal/suggest"
)

// commandNames lists the visible commands a user may mean.
func commandNames(cmds []*cli.Command) []string {
	var out []string
	for _, c := range cmds {
		if !c.Hidden {
			out = append(out, c.Names()...)
		}
	}
	return out
}

// unknownFlag turns urfave's "flag provided but not defined: -x" into a
// usage error that suggests the flag the user probably meant.
func unknownFlag(c *cli.Context, err error) error {
	const prefix = "flag provided but not defined: "
	msg := err.Error()
	if !strings.HasPrefix(msg, prefix) {
		return usageError(c, "%v", err)
	}
	typed := strings.TrimLeft(strings.TrimPrefix(msg, prefix), "-")
	flags := c.App.Flags
	if c.Command != nil && c.Command.Name != "" {
		flags = c.Command.Flags
	}
	var names []string
	for _, f := range flags {
		names = append(names, f.Names()...)
	}
	names = append(names, "help")
	if s := suggest.Closest(typed, names); s != "" {
		return usageError(c, "unknown flag --%s; did you mean --%s?", typed, s)
	}
	return usageError(c, "unknown flag --%s", typed)
}
