package netmon

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// netlinkRcvBuf asks for a receive buffer large enough for the bursts that
// bringing an interface up or down produces (one message per address and
// route); the kernel caps it at net.core.rmem_max.
const netlinkRcvBuf = 1 << 20

// NetlinkSource is the rtnetlink Source. Namespace, if set, is the network
// namespace to watch instead of the process's own (lab tests use it).
type NetlinkSource struct {
	Namespace *netns.NsHandle
}

func (s *NetlinkSource) ns() netns.NsHandle {
	if s.Namespace != nil {
		return *s.Namespace
	}
	return netns.None()
}

func (s *NetlinkSource) handle() (*netlink.Handle, error) {
	if s.Namespace == nil {
		return netlink.NewHandle()
	}
	return netlink.NewHandleAt(*s.Namespace)
}

// Subscribe opens one netlink socket per kind of change. Without
// ListExisting: the monitor dumps the state itself after subscribing, which
// lets it tell where the dump ends.
func (s *NetlinkSource) Subscribe(done <-chan struct{}, u Updates, onErr func(error)) error {
	ns := s.ns()
	// The library closes a channel only once its receive goroutine started;
	// the channels it never took are closed here, as Source requires.
	addrTaken, linkTaken, routeTaken := false, false, false
	defer func() {
		if !addrTaken {
			close(u.Addrs)
		}
		if !linkTaken {
			close(u.Links)
		}
		if !routeTaken {
			close(u.Routes)
		}
	}()
	err := netlink.AddrSubscribeWithOptions(u.Addrs, done, netlink.AddrSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: netlinkRcvBuf,
	})
	if err != nil {
		return fmt.Errorf("addresses: %w", err)
	}
	addrTaken = true
	err = netlink.LinkSubscribeWithOptions(u.Links, done, netlink.LinkSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: netlinkRcvBuf,
	})
	if err != nil {
		return fmt.Errorf("links: %w", err)
	}
	linkTaken = true
	err = netlink.RouteSubscribeWithOptions(u.Routes, done, netlink.RouteSubscribeOptions{
		Namespace: &ns, ErrorCallback: onErr, ReceiveBufferSize: netlinkRcvBuf,
	})
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	routeTaken = true
	return nil
}

// List dumps links and then addresses. An interrupted dump is returned as
// netlink.ErrDumpInterrupted for the caller to retry.
func (s *NetlinkSource) List() ([]netlink.Link, []netlink.Addr, error) {
	h, err := s.handle()
	if err != nil {
		return nil, nil, fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, nil, fmt.Errorf("list links: %w", err)
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("list addresses: %w", err)
	}
	return links, addrs, nil
}

// RouteGet is `ip route get` in the source's namespace.
func (s *NetlinkSource) RouteGet(dst net.IP, opts *netlink.RouteGetOptions) ([]netlink.Route, error) {
	h, err := s.handle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	defer h.Close()
	return h.RouteGetWithOptions(dst, opts)
}
