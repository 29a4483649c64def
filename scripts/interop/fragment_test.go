package interop

import (
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// dropFragments gives every link of the client's wlan path and the
// gateway an MTU of 1280 and makes the inet router drop IP fragments before
// anything could reassemble them, as many real firewalls do. It returns
// a function reporting how many fragments were dropped.
func dropFragments(t *testing.T, l *lab.Lab) func() int {
	t.Helper()
	for _, c := range [][]string{
		{lab.Client, "ip", "link", "set", lab.WLAN, "mtu", "1280"},
		{lab.Client, "ip", "link", "set", lab.WWAN, "mtu", "1280"},
		{lab.Gateway, "ip", "link", "set", "eth0", "mtu", "1280"},
		{lab.Gateway, "ip", "link", "set", "eth1", "mtu", "1280"},
		// Priority -450 runs before conntrack's defragmentation (-400).
		{lab.Inet, "nft", "add table ip fragdrop; add chain ip fragdrop pre { type filter hook prerouting priority -450; policy accept; }; " +
			"add rule ip fragdrop pre ip frag-off & 0x3fff != 0 counter drop"},
	} {
		if err := l.Exec(c[0], c[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	counter := regexp.MustCompile(`counter packets (\d+)`)
	return func() int {
		out, err := l.Output(lab.Inet, "nft", "list", "chain", "ip", "fragdrop", "pre")
		if err != nil {
			t.Fatal(err)
		}
		m := counter.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no counter in:\n%s", out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
}

// TestIKEFragmentationStrongSwan: IKE_AUTH with an RSA-4096 chain of three
// (root, intermediate, end entity, both ways) over a path with MTU 1280
// that drops IP fragments. With RFC 7383 the tunnel comes up and carries
// traffic; with fragmentation = false the same connect fails, naming the
// unreachable gateway, while the inet router counts the fragments it
// dropped.
func TestIKEFragmentationStrongSwan(t *testing.T) {
	l, bin := setup(t)
	pki, err := lab.NewRSAChainPKI(filepath.Join(l.Dir, "rsa-pki"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	dropped := dropFragments(t, l)
	ike := []string{"aes256gcm16-prfsha256-curve25519"}
	gw := startSwanConn(t, l, pki, lab.GatewayConn("pubkey", "", ike, nil))
	fail := failWith(t, swanLog("strongSwan gateway log", gw))

	t.Run("without fragmentation", func(t *testing.T) {
		p := lab.LabProfile("pubkey", "", pki, ike)
		p.NoFragmentation = true
		r := roamClient(t, l, bin, p)
		before := dropped()
		start := time.Now()
		out, err := r.Connect("corp", 30*time.Second)
		if err == nil {
			fail("connected without RFC 7383 over a path that drops IP fragments:\n%s", out)
		}
		t.Logf("connect failed after %v: %v\n%s", time.Since(start).Round(time.Millisecond), err, out)
		if !regexp.MustCompile(`(?i)unreachable`).MatchString(out + err.Error()) {
			t.Errorf("failure does not name the unreachable gateway: %v\n%s", err, out)
		}
		if dropped() == before {
			t.Error("the inet router dropped no IP fragments: the path does not test fragmentation")
		}
	})
	t.Run("RFC 7383", func(t *testing.T) {
		r := roamClient(t, l, bin, lab.LabProfile("pubkey", "", pki, ike))
		before := dropped()
		connectOnce(t, l, r, fail)
		if _, err := gw.WaitSA(2*time.Second, lab.Established); err != nil {
			fail("%v", err)
		}
		if n := dropped(); n != before {
			t.Errorf("%d IP fragments dropped while connecting with RFC 7383", n-before)
		}
	})
}
