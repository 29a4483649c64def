//go:build !urfave_cli_no_docs

// The man page generator needs urfave's Markdown output and go-md2man,
// whose blackfriday tables cost every start of roam about a millisecond
// of package initialisation. The binary that ships (make build, the .deb,
// the lab) is built with -tags urfave_cli_no_docs and has neither; make man
// builds roam without the tag to render the pages (man_nodocs.go).

package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/cpuguy83/go-md2man/v2/md2man"
	"github.com/urfave/cli/v2"
)

// manSections follow the commands in roam(8): what a script and an
// administrator need beyond the flags.
const manSections = `
# EXIT STATUS

**0**
: success; for **check**, no problems found

**1**
: failure not listed below; for **check**, problems found

**2**
: usage error: unknown command or flag, missing or extra arguments

**3**
: the profile or gateway file is missing, unreadable or broken, or has no such profile

**4**
: permission denied: roam needs root, or the control socket's group

**5**
: authentication failed (wrong PSK, password or certificate, on either side)

**6**
: negotiation refused: no proposal chosen, traffic selectors or internal address unacceptable

**7**
: gateway unreachable: no answer after retransmissions, or its name does not resolve

# ENVIRONMENT

**ROAM_CONFIG**
: profile file, instead of /etc/roam/roam.toml

**ROAM_SOCKET**
: control socket of the daemon, instead of /run/roam/roam.sock

**ROAM_LOG_LEVEL**
: as **--log-level**: debug, info, warn or error

# SYSTEMD

**systemctl enable --now roam** runs the daemon (**roam.service**, Type=notify,
logs in the journal); **systemctl enable --now roam@corp** connects profile
corp at boot (**roam@.service** runs **roam connect** and **roam disconnect**).

# FILES

*/etc/roam/roam.toml*
: profiles, see **roam.toml**(5); */etc/roam/roam.toml.example* has commented ones

*/run/roam/roam.sock*
: control socket of the daemon that **connect** starts

*/run/roam/roam.log*
: log of that daemon

*/run/roam/state/*
: what the daemon changed (rules, routes, TUN device, lockdown), written before each change; what a killed daemon left is undone by the next daemon or **disconnect --all**

*/usr/lib/systemd/system/roam.service*, *roam@.service*
: the units

# EXAMPLES

Check the profile file, connect, look, disconnect:

    roam check
    roam connect corp
    roam status
    roam disconnect corp

Flags may follow the profile name: **roam connect corp --foreground**.

# SEE ALSO

**roam.toml**(5), **ipsec.conf**(5), **swanctl.conf**(5)
`

// manCommand prints a manual page as roff: roam(8) from the CLI
// definition, or, given a Markdown page in go-md2man's dialect (such as
// docs/roam.toml.5.md), that page. `make man` uses it, from a build
// without the tag urfave_cli_no_docs.
func manCommand() *cli.Command {
	return &cli.Command{
		Name:      "man",
		Usage:     "print the roam(8) manual page, or convert a Markdown page, as roff",
		ArgsUsage: "[PAGE.md]",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			var md []byte
			switch c.NArg() {
			case 0:
				s, err := roamManMarkdown(c.App)
				if err != nil {
					return err
				}
				md = []byte(s)
			case 1:
				var err error
				if md, err = os.ReadFile(c.Args().First()); err != nil {
					return withCode(exitConfig, fmt.Errorf("man: %w", err))
				}
			default:
				return usageError(c, "want at most one PAGE.md")
			}
			_, err := c.App.Writer.Write(md2man.Render(md))
			return err
		},
	}
}

// roamManMarkdown is roam(8) in Markdown: urfave's page of the commands and
// flags, with a title and the sections above.
func roamManMarkdown(app *cli.App) (string, error) {
	md, err := app.ToMarkdown()
	if err != nil {
		return "", fmt.Errorf("man: %w", err)
	}
	v := strings.TrimPrefix(strings.Fields(versionLine())[1], "v")
	return fmt.Sprintf("%% roam 8 \"\" \"roam %s\" \"System Administration\"\n\n", v) + md + manSections, nil
}
