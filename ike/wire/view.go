package wire

// View is a message's payloads collected by type, built once per message by
// Collect, so the engine reads fields instead of walking the chain with a
// type switch in every handler. RFC 7296 allows at most one of most payload
// types in a message; where a peer sends more, a field holds the last one,
// as the engine's collection always has. Payloads that may repeat (CERT,
// CERTREQ, Delete, Notify) are kept in order. All keeps the chain itself.
//
// Collect parses nothing: the payloads were decoded (and unknown critical
// ones refused) by Decode and DecodePayloads, and a View only points into
// them. It allocates only for repeated payload types that are present, and
// not at all for Notifies, which are looked up in All.
type View struct {
	All []Payload

	SA       *SA
	KE       *KE
	Nonce    *Nonce
	IDi, IDr *Identification
	Auth     *Auth
	TSi, TSr *TrafficSelectors
	CP       *Config
	EAP      *EAP

	Certs    []*Cert
	CertReqs []*CertReq
	Deletes  []*Delete
}

// Collect builds the view of ps.
func Collect(ps []Payload) View {
	v := View{All: ps}
	for _, p := range ps {
		switch p := p.(type) {
		case *SA:
			v.SA = p
		case *KE:
			v.KE = p
		case *Nonce:
			v.Nonce = p
		case *Identification:
			if p.Responder {
				v.IDr = p
			} else {
				v.IDi = p
			}
		case *Auth:
			v.Auth = p
		case *TrafficSelectors:
			if p.Responder {
				v.TSr = p
			} else {
				v.TSi = p
			}
		case *Config:
			v.CP = p
		case *EAP:
			v.EAP = p
		case *Cert:
			v.Certs = append(v.Certs, p)
		case *CertReq:
			v.CertReqs = append(v.CertReqs, p)
		case *Delete:
			v.Deletes = append(v.Deletes, p)
		}
	}
	return v
}

// Notify returns the first notify of type t, or nil.
func (v *View) Notify(t NotifyType) *Notify { return FindNotify(v.All, t) }

// Has reports whether a notify of type t is present.
func (v *View) Has(t NotifyType) bool { return FindNotify(v.All, t) != nil }

// FirstError returns the first error notify (a type below 16384 other than
// the reserved zero), or nil.
func (v *View) FirstError() *Notify { return FirstError(v.All) }

// Config returns the last Configuration payload of type cfgType, or nil: a
// CFG_REPLY is read by the initiator, a CFG_REQUEST by the responder, and
// one of the other kind in the same message is not theirs to read.
func (v *View) Config(cfgType uint8) *Config {
	var c *Config
	for _, p := range v.All {
		if p, ok := p.(*Config); ok && p.CfgType == cfgType {
			c = p
		}
	}
	return c
}

// FirstError returns the first error notify among ps (a type below 16384
// other than the reserved zero), or nil.
func FirstError(ps []Payload) *Notify {
	for _, p := range ps {
		if n, ok := p.(*Notify); ok && n.Type.IsError() && n.Type != 0 {
			return n
		}
	}
	return nil
}
