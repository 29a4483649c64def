package config

import "fmt"

// How a profile's remote_ts become Child SAs (children = ...).
const (
	// ChildrenSingle: one Child SA carries every remote_ts entry.
	ChildrenSingle = "single"
	// ChildrenPerTS: one Child SA per remote_ts entry, as with one
	// swanctl children section per network: the first is negotiated in
	// IKE_AUTH, the others with CREATE_CHILD_SA right after.
	ChildrenPerTS = "per_ts"
)

type rawChildren struct {
	Children string `toml:"children"`
}

// validate returns the children mode, ChildrenSingle when unset.
func (r rawChildren) validate() (string, error) {
	switch r.Children {
	case "":
		return ChildrenSingle, nil
	case ChildrenSingle, ChildrenPerTS:
		return r.Children, nil
	}
	return "", fmt.Errorf("children: %q is not %s or %s", r.Children, ChildrenSingle, ChildrenPerTS)
}
