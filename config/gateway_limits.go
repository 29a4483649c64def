package config

import "fmt"

// GatewayLimits bound what clients can make the gateway hold. Zero means
// the engine's default (ike.DefaultMaxIKESAs and friends; config does not
// import the engine).
type GatewayLimits struct {
	// MaxIKESAs (max_ike_sas): IKE SAs in all, half-open or not; further
	// IKE_SA_INITs are dropped. Default 10000.
	MaxIKESAs int
	// MaxIKESAsPerClient (max_ike_sas_per_client): IKE SAs of one
	// identity; a new one ends its oldest. Default 4.
	MaxIKESAsPerClient int
	// MaxChildSAs (max_child_sas): Child SAs of one IKE SA; a rekey past
	// it gets NO_ADDITIONAL_SAS. Default 4.
	MaxChildSAs int
	// HalfOpenPerSource (half_open_per_source): half-open IKE SAs of one
	// source address, as strongSwan's block_threshold. Default 5.
	HalfOpenPerSource int
}

type rawGatewayLimits struct {
	MaxIKESAs          *int64 `toml:"max_ike_sas"`
	MaxIKESAsPerClient *int64 `toml:"max_ike_sas_per_client"`
	MaxChildSAs        *int64 `toml:"max_child_sas"`
	HalfOpenPerSource  *int64 `toml:"half_open_per_source"`
}

// maxLimit keeps the limits within what any gateway could mean.
const maxLimit = 1 << 24

func (r rawGatewayLimits) validate() (GatewayLimits, error) {
	var l GatewayLimits
	for _, k := range []struct {
		key string
		v   *int64
		out *int
	}{
		{"max_ike_sas", r.MaxIKESAs, &l.MaxIKESAs},
		{"max_ike_sas_per_client", r.MaxIKESAsPerClient, &l.MaxIKESAsPerClient},
		{"max_child_sas", r.MaxChildSAs, &l.MaxChildSAs},
		{"half_open_per_source", r.HalfOpenPerSource, &l.HalfOpenPerSource},
	} {
		if k.v == nil {
			continue
		}
		if *k.v < 1 || *k.v > maxLimit {
			return GatewayLimits{}, fmt.Errorf("%s: %d is not between 1 and %d", k.key, *k.v, maxLimit)
		}
		*k.out = int(*k.v)
	}
	if l.MaxChildSAs == 1 {
		return GatewayLimits{}, fmt.Errorf("max_child_sas: 1 leaves no room to rekey (at least 2)")
	}
	return l, nil
}
