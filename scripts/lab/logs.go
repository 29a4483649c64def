package lab

import (
	"fmt"
	"os"
	"path/filepath"
)

// SaveLogs writes files (name to content) into dir/name, for a benchmark
// run worth a look afterwards. It goes on past a file it cannot write and
// returns the first error.
func SaveLogs(dir, name string, files map[string]string) error {
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return fmt.Errorf("logs: %w", err)
	}
	var first error
	for f, s := range files {
		if err := os.WriteFile(filepath.Join(d, f), []byte(s), 0o644); err != nil && first == nil {
			first = fmt.Errorf("logs: %w", err)
		}
	}
	return first
}
