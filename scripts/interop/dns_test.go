package interop

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestDNSResolvConfCrash: without systemd-resolved or resolvconf in the
// client namespace, the DNS servers and the domains that roam gateway
// sends in CP (RFC 8598) land in the namespace's own resolv.conf (ip netns
// exec bind-mounts /etc/netns/<ns>/resolv.conf, never the machine's); a
// daemon killed with SIGKILL leaves the rewrite, and the next daemon's start
// puts the original back.
func TestDNSResolvConfCrash(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	_, _ = startRoamGateway(t, l, bin, lab.RoamGatewayConfig{Auth: "psk", PSK: goodPSK, PKI: pki, DNSDomains: []string{"corp.example", "lab.example"}})
	p := lab.LabProfile("psk", goodPSK, pki, nil)
	p.DNS = true
	r := roamClient(t, l, bin, p)
	resolv := filepath.Join("/etc/netns", l.NS(lab.Client), "resolv.conf")
	read := func() string {
		b, err := os.ReadFile(resolv)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	debug := func() {
		if b, err := os.ReadFile(filepath.Join(filepath.Dir(r.Socket), "roam.log")); err == nil {
			t.Logf("roam daemon log:\n%s", b)
		}
	}
	applied := func(when string) {
		t.Helper()
		got := read()
		for _, want := range []string{"nameserver 10.99.0.53", "search corp.example lab.example"} {
			if !strings.Contains(got, want) {
				debug()
				t.Fatalf("%s: resolv.conf lacks %q:\n%s", when, want, got)
			}
		}
	}
	if out, err := r.Connect("corp", 20*time.Second); err != nil {
		debug()
		t.Fatalf("connect: %v\n%s", err, out)
	}
	applied("connected")
	if st := connected(t, r, "corp"); st.DNSMethod != "file" {
		t.Errorf("status: dns_method %q, want file", st.DNSMethod)
	}

	pids := r.Processes()
	if len(pids) == 0 {
		t.Fatal("no roam daemon in the client namespace")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
	}
	// Gone from the process list is not yet gone: a dying process loses
	// its command line before its files, and the control socket with
	// them; a zombie holds nothing.
	for _, pid := range pids {
		for deadline := time.Now().Add(10 * time.Second); !deadOrZombie(pid); {
			if time.Now().After(deadline) {
				t.Fatalf("killed daemon %d still running", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// and the socket refuses once no process holds it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.Dial("unix", r.Socket)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			ps, _ := exec.Command("sh", "-c", "ps -eo pid,ppid,stat,args | grep '[r]oam daemon'").CombinedOutput()
			t.Fatalf("the killed daemon's socket %s still accepts; daemons:\n%s", r.Socket, ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
	applied("daemon killed") // nothing could undo it yet

	// With no daemon left, disconnect --all undoes what the killed one
	// left, as a new daemon does at its start.
	out, err := r.Run(15*time.Second, "disconnect", "--all")
	if err != nil {
		t.Fatalf("disconnect --all: %v\n%s", err, out)
	}
	if !strings.Contains(out, "restored leftover DNS settings") {
		t.Errorf("disconnect --all said %q, want it to name the DNS settings it restored", out)
	}
	if got := read(); got != lab.ResolvConf {
		t.Fatalf("resolv.conf after disconnect --all %q, want the original %q", got, lab.ResolvConf)
	}
}

func deadOrZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// TestDNSDomainsFromStrongSwan: a strongSwan gateway's RFC 8598 domains
// (a pool attribute 25) reach the client's resolver like roam gateway's.
func TestDNSDomainsFromStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki := newPKI(t, l)
	conn := lab.GatewayConn("psk", goodPSK, nil, nil)
	conn.DNSDomains = []string{"corp.example"}
	startSwanConn(t, l, pki, conn)
	p := lab.LabProfile("psk", goodPSK, pki, nil)
	p.DNS = true
	r := roamClient(t, l, bin, p)
	if out, err := r.Connect("corp", 30*time.Second); err != nil {
		t.Fatalf("connect: %v\n%s", err, out)
	}
	st := connected(t, r, "corp")
	if !slices.Equal(st.DNSDomains, []string{"corp.example"}) || len(st.DNSServers) == 0 {
		t.Errorf("status: dns_servers %v dns_domains %v; want strongSwan's server and corp.example", st.DNSServers, st.DNSDomains)
	}
	b, _ := os.ReadFile(filepath.Join("/etc/netns", l.NS(lab.Client), "resolv.conf"))
	if !strings.Contains(string(b), "search corp.example") {
		t.Errorf("resolv.conf lacks the domain:\n%s", b)
	}
}
