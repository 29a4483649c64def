package ike

import (
	"errors"
	"fmt"

	"github.com/roam-vpn/roam/ike/wire"
)

// Failure classes the daemon reports to the user. Match with errors.Is; the
// concrete errors name the notify or exchange involved.
var (
	ErrAuthenticationFailed   = errors.New("authentication failed")
	ErrNoProposalChosen       = errors.New("no proposal chosen")
	ErrTSUnacceptable         = errors.New("traffic selectors unacceptable")
	ErrUnreachable            = errors.New("gateway unreachable")
	ErrInternalAddressFailure = errors.New("internal address failure")
	ErrFailedCPRequired       = errors.New("configuration payload required")
	ErrInvalidSyntax          = errors.New("invalid syntax")
	ErrPeerDeleted            = errors.New("deleted by peer")
	ErrClosed                 = errors.New("closed")
	ErrPoolExhausted          = errors.New("address pool exhausted")
	// MOBIKE refusals of one path (RFC 4555 3.5, 3.9): UpdateAddresses
	// tries the other candidates before giving up with one of these.
	ErrUnacceptableAddresses = errors.New("address unacceptable to the peer")
	ErrUnexpectedNAT         = errors.New("NAT detected where NAT is forbidden")
)

// NotifyError is an error notification, sent by the peer (Remote) or by us
// because the peer's message could not be accepted.
type NotifyError struct {
	Type     wire.NotifyType
	Exchange wire.ExchangeType
	Remote   bool  // the peer sent it
	Err      error // detail, may be nil
}

func (e *NotifyError) Error() string {
	var s string
	if e.Remote {
		s = fmt.Sprintf("%s: peer sent %s in %s", notifyClass(e.Type), e.Type, e.Exchange)
	} else {
		s = fmt.Sprintf("%s (%s in %s)", notifyClass(e.Type), e.Type, e.Exchange)
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *NotifyError) Unwrap() []error {
	errs := []error{}
	if c := notifyClass(e.Type); c != nil {
		errs = append(errs, c)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func notifyClass(t wire.NotifyType) error {
	switch t {
	case wire.NotifyAuthenticationFailed:
		return ErrAuthenticationFailed
	case wire.NotifyNoProposalChosen:
		return ErrNoProposalChosen
	case wire.NotifyTSUnacceptable:
		return ErrTSUnacceptable
	case wire.NotifyInternalAddressFailure:
		return ErrInternalAddressFailure
	case wire.NotifyFailedCPRequired:
		return ErrFailedCPRequired
	case wire.NotifyInvalidSyntax:
		return ErrInvalidSyntax
	case wire.NotifyUnacceptableAddresses:
		return ErrUnacceptableAddresses
	case wire.NotifyUnexpectedNATDetected:
		return ErrUnexpectedNAT
	}
	return errNotify
}

var errNotify = errors.New("error notification")

// UnreachableError reports an exchange that got no response.
type UnreachableError struct {
	Exchange        wire.ExchangeType
	Retransmissions int
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("gateway unreachable: no response to %s after %d retransmissions", e.Exchange, e.Retransmissions)
}

func (e *UnreachableError) Is(target error) bool { return target == ErrUnreachable }
