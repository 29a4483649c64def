package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/roam-vpn/roam/config"
	"github.com/roam-vpn/roam/internal/suggest"
)

// The bash and zsh scripts ask roam itself for candidates (urfave's
// --generate-bash-completion), so they follow the CLI and the profile
// file without being regenerated.
const bashCompletion = `# bash completion for roam; load with: source <(roam completion bash)
_roam_complete() {
    local cur="${COMP_WORDS[COMP_CWORD]}" candidates
    if [[ "$cur" == -* ]]; then
        candidates=$("${COMP_WORDS[@]:0:COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
    else
        candidates=$("${COMP_WORDS[@]:0:COMP_CWORD}" --generate-bash-completion 2>/dev/null)
    fi
    local IFS=$'\n'
    COMPREPLY=($(compgen -W "$candidates" -- "$cur"))
}
complete -o bashdefault -o default -F _roam_complete roam
`

const zshCompletion = `#compdef roam
# zsh completion for roam; load with: source <(roam completion zsh)
_roam() {
    local -a candidates
    local cur=${words[CURRENT]}
    if [[ "$cur" == -* ]]; then
        candidates=(${(f)"$(${words[1,CURRENT-1]} $cur --generate-bash-completion 2>/dev/null)"})
    else
        candidates=(${(f)"$(${words[1,CURRENT-1]} --generate-bash-completion 2>/dev/null)"})
    fi
    _describe 'roam' candidates
    _files
}
if [[ "$funcstack[1]" == "_roam" ]]; then
    _roam "$@"
else
    compdef _roam roam
fi
`

// fishProfiles completes profile names after the commands that take one.
const fishProfiles = `
# profile names, read from the profile file
complete -c roam -n '__fish_seen_subcommand_from connect disconnect status check' -f -a '(roam connect --generate-bash-completion 2>/dev/null | string match -v -- "-*")'
`

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: "Load it in the running shell with source <(roam completion bash), or install it:\n" +
			"roam completion bash > /etc/bash_completion.d/roam (make install does this).",
		BashComplete: func(c *cli.Context) {
			fmt.Fprintln(c.App.Writer, "bash\nzsh\nfish")
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usageError(c, "want one shell: bash, zsh or fish")
			}
			w := c.App.Writer
			switch shell := c.Args().First(); shell {
			case "bash":
				_, err := fmt.Fprint(w, bashCompletion)
				return err
			case "zsh":
				_, err := fmt.Fprint(w, zshCompletion)
				return err
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("completion: %w", err)
				}
				_, err = fmt.Fprint(w, s+fishProfiles)
				return err
			default:
				if s := suggest.Closest(shell, []string{"bash", "fish", "zsh"}); s != "" {
					return usageError(c, "unknown shell %q; did you mean %q?", shell, s)
				}
				return usageError(c, "unknown shell %q; want bash, zsh or fish", shell)
			}
		},
	}
}

// completeProfiles lists the command's flags when the word being
// completed starts with "-" (urfave's default), and the profiles of the file
// the command would read. A file the user may not read completes no names.
func completeProfiles(c *cli.Context) {
	// urfave's own completion reads the word being completed from os.Args
	// too: it is the argument before the completion flag.
	if n := len(os.Args); n > 2 && strings.HasPrefix(os.Args[n-2], "-") {
		cli.DefaultCompleteWithFlags(c.Command)(c)
		return
	}
	path := defaultConfig
	if c.IsSet("config") {
		path = c.String("config")
	} else if env := os.Getenv("ROAM_CONFIG"); env != "" {
		path = env
	}
	names, err := config.ProfileNames(path)
	if err != nil {
		return
	}
	for _, n := range names {
		fmt.Fprintln(c.App.Writer, n)
	}
}
