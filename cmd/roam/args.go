package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// completionFlag is what a shell completion script appends to ask for
// candidates; urfave looks for it last.
const completionFlag = "--generate-bash-completion"

// flagsFirst reorders a command line so that the flags of the command it
// names come before the positional arguments: `roam connect corp
// --foreground` means `roam connect --foreground corp`, as users of most
// CLIs expect, while Go's flag parsing would stop at "corp". Everything
// after "--" stays positional.
func flagsFirst(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	rest := args[1:]
	completing := rest[len(rest)-1] == completionFlag
	if completing {
		rest = rest[:len(rest)-1]
	}
	out := []string{args[0]}
	flags, subs := app.Flags, app.Commands
	// Walk down the command path: leading flags of each level, then the
	// subcommand it names.
	i := 0
	for {
		for i < len(rest) && isFlagToken(rest[i]) {
			out = append(out, rest[i])
			if takesValue(flags, rest[i]) && i+1 < len(rest) {
				out = append(out, rest[i+1])
				i++
			}
			i++
		}
		if i >= len(rest) {
			break
		}
		sub := findCommand(subs, rest[i])
		if sub == nil {
			break
		}
		out = append(out, rest[i])
		flags, subs = sub.Flags, sub.Subcommands
		i++
	}
	var pos []string
	for ; i < len(rest); i++ {
		t := rest[i]
		if t == "--" {
			pos = append(pos, rest[i+1:]...)
			break
		}
		if !isFlagToken(t) {
			pos = append(pos, t)
			continue
		}
		out = append(out, t)
		if takesValue(flags, t) && i+1 < len(rest) {
			out = append(out, rest[i+1])
			i++
		}
	}
	for _, p := range pos {
		if strings.HasPrefix(p, "-") {
			out = append(out, "--")
			break
		}
	}
	out = append(out, pos...)
	if completing {
		out = append(out, completionFlag)
	}
	return out
}

func isFlagToken(s string) bool { return len(s) > 1 && s[0] == '-' && s != "--" }

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether the flag token is a known flag whose value is
// the next argument ("--config FILE", not "--config=FILE" or "--json").
func takesValue(flags []cli.Flag, tok string) bool {
	name := strings.TrimLeft(tok, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				v, ok := f.(interface{ TakesValue() bool })
				return ok && v.TakesValue()
			}
		}
	}
	return false
}
