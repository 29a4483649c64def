package esp

import (
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSocketFromFile: a socket passed as a descriptor comes back as a
// working Socket with its family, port and options; anything but a bound
// UDP socket is refused with a reason.
func TestSocketFromFile(t *testing.T) {
	tests := []struct {
		name string
		open func(t *testing.T) *os.File
		// family "4" or "6" of a working socket; "" with wantErr.
		family  string
		wantErr string
	}{
		{name: "IPv4", family: "4", open: func(t *testing.T) *os.File {
			return socketFile(t, netip.MustParseAddrPort("127.0.0.1:0"))
		}},
		{name: "IPv6", family: "6", open: func(t *testing.T) *os.File {
			return socketFile(t, netip.MustParseAddrPort("[::1]:0"))
		}},
		{name: "TCP", wantErr: "want a datagram socket", open: func(t *testing.T) *os.File {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			f, err := ln.(*net.TCPListener).File()
			if err != nil {
				t.Fatal(err)
			}
			return f
		}},
		{name: "unbound UDP", wantErr: "not bound", open: func(t *testing.T) *os.File {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
			if err != nil {
				t.Fatal(err)
			}
			return os.NewFile(uintptr(fd), "unbound")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.open(t)
			defer f.Close()
			s, err := SocketFromFile(f)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := s.LocalAddr().Addr().Is6(); got != (tt.family == "6") || s.LocalAddr().Port() == 0 {
				t.Fatalf("local %v, want family %s and a port", s.LocalAddr(), tt.family)
			}
			if mark, err := unix.GetsockoptInt(sockFD(t, s), unix.SOL_SOCKET, unix.SO_MARK); err != nil || mark != 0x77 {
				t.Fatalf("mark %#x (%v), want the passed socket's 0x77", mark, err)
			}
			// A datagram to it arrives through the new Socket.
			peer, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(s.LocalAddr().Addr(), 0)))
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			if _, err := peer.WriteToUDPAddrPort([]byte("hello"), s.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			msgs := make([]Message, 4)
			done := make(chan int, 1)
			go func() {
				n, _ := s.ReadBatch(msgs)
				done <- n
			}()
			select {
			case n := <-done:
				if n != 1 || string(msgs[0].Buf) != "hello" {
					t.Fatalf("read %d: %q", n, msgs[0].Buf)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("nothing read")
			}
		})
	}
}

// socketFile opens a ListenUDP socket on local (loopback, mark 0x77) and
// returns its descriptor as another process would get it.
func socketFile(t *testing.T, local netip.AddrPort) *os.File {
	t.Helper()
	s, err := ListenUDP(local, 0x77)
	if err != nil {
		t.Skipf("no socket on %v: %v", local, err)
	}
	defer s.Close()
	f, err := s.File()
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func sockFD(t *testing.T, s *Socket) int {
	t.Helper()
	var fd int
	if err := s.rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		t.Fatal(err)
	}
	return fd
}
