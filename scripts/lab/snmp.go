package lab

import (
	"fmt"
	"strconv"
	"strings"
)

// FragCreates returns how many IP fragments the namespace's kernel has
// made (IPv4 Ip FragCreates from /proc/net/snmp plus Ip6FragCreates from
// /proc/net/snmp6): a sender or router that fragments shows here.
func (l *Lab) FragCreates(ns string) (int, error) {
	out, err := l.Output(ns, "cat", "/proc/net/snmp", "/proc/net/snmp6")
	if err != nil {
		return 0, fmt.Errorf("%s: read SNMP counters: %w", ns, err)
	}
	return parseFragCreates(out)
}

// parseFragCreates reads FragCreates from the "Ip:" header and value lines
// of /proc/net/snmp and Ip6FragCreates from /proc/net/snmp6.
func parseFragCreates(out string) (int, error) {
	lines := strings.Split(out, "\n")
	total, found := 0, 0
	for i, line := range lines {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "Ip6FragCreates":
			n, err := strconv.Atoi(f[1])
			if err != nil {
				return 0, fmt.Errorf("Ip6FragCreates %q: %w", f[1], err)
			}
			total += n
			found++
		case len(f) > 1 && f[0] == "Ip:" && i+1 < len(lines):
			vals := strings.Fields(lines[i+1])
			if len(vals) != len(f) || vals[0] != "Ip:" {
				continue // this was the value line
			}
			for j, name := range f {
				if name == "FragCreates" {
					n, err := strconv.Atoi(vals[j])
					if err != nil {
						return 0, fmt.Errorf("FragCreates %q: %w", vals[j], err)
					}
					total += n
					found++
				}
			}
		}
	}
	if found == 0 {
		return 0, fmt.Errorf("no FragCreates counter in:\n%s", out)
	}
	return total, nil
}
