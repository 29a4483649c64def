package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/config"
)

// checkCommand validates profile and gateway files without connecting.
func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "validate the profile file (or a gateway file) offline",
		ArgsUsage: "[PROFILE...]",
		Description: "Reports one line per problem, naming the profile and the key: TOML syntax, unknown keys,\n" +
			"proposal strings, file modes, certificates and keys that do not parse or match, certificate\n" +
			"lifetimes, a ca that did not issue the certificate, a local_id the certificate does not name.\n" +
			"A file with a [gateway] table is checked as a gateway file. Exits 1 if any problem is found.",
		Flags:        []cli.Flag{configFlag()},
		BashComplete: completeProfiles,
		Action: func(c *cli.Context) error {
			path := c.String("config")
			now := time.Now()
			var problems []config.Problem
			what := "profile file"
			if config.IsGatewayFile(path) {
				if c.NArg() != 0 {
					return usageError(c, "%s is a gateway file: it has no profiles to name", path)
				}
				what = "gateway file"
				problems = config.CheckGateway(path, now)
			} else {
				problems = config.CheckProfiles(path, c.Args().Slice(), now)
			}
			w := c.App.Writer
			failed := 0
			for _, p := range problems {
				fmt.Fprintf(w, "%s: %s\n", path, p)
				if !p.Warning {
					failed++
				}
			}
			if failed > 0 {
				return withCode(exitFailure, fmt.Errorf("check: %d problem(s) in %s", failed, path))
			}
			_, err := fmt.Fprintf(w, "%s: %s OK\n", path, what)
			return err
		},
	}
}
