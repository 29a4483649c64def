package interop

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roam-vpn/roam/scripts/lab"
)

// TestRekeySoak is issue 4's long run (ROAM_SOAK=1, `make soak`; minutes,
// so not in CI): Child SA rekey 30 s and IKE SA rekey 60 s on both sides,
// five minutes (ROAM_SOAK_TIME) of a ping every 10 ms and a TCP transfer
// (ROAM_SOAK_RATE, default 8M) through them. It
// wants at least five rekeys started by each side and no echo lost. For
// every lost echo it shows where it went missing (the host's counters tell
// requests that never arrived from replies that never came back) and what
// both ends logged around it.
func TestRekeySoak(t *testing.T) {
	if os.Getenv("ROAM_SOAK") == "" {
		t.Skip("ROAM_SOAK not set (make soak)")
	}
	run := 5 * time.Minute
	if d, err := time.ParseDuration(os.Getenv("ROAM_SOAK_TIME")); err == nil && d > 0 {
		run = d
	}
	const childLife, ikeLife = 30 * time.Second, 60 * time.Second
	// The TCP transfer's rate: modest by default, since the point is a
	// connection that lives through the rekeys, and strongSwan's userspace
	// ESP on this shared machine overflows its socket at 20 Mbit/s now and
	// then (counted apart as congestion either way).
	rate := "8M"
	if v := os.Getenv("ROAM_SOAK_RATE"); v != "" {
		rate = v
	}
	l, bin := setup(t)
	pki := newPKI(t, l)
	conn := lab.GatewayConn("psk", goodPSK, nil, nil)
	conn.ChildRekey, conn.IKERekey = childLife, ikeLife
	p := lab.LabProfile("psk", goodPSK, pki, nil)
	p.ChildRekey, p.IKERekey = childLife, ikeLife
	// strongSwan takes up to about a tenth off its rekey times at random
	// (its rand_time); roam's jitter is the Child SAs' life less their
	// rekey time, so a life of 36 s gives it a window like strongSwan's
	// for both the Child (24-30 s) and the IKE SA (54-60 s), and each side
	// wins some of the races to rekey first.
	p.ChildLife = 36 * time.Second
	gw := startSwanConn(t, l, pki, conn)
	r := roamClient(t, l, bin, p)
	roamLog := func() string {
		b, _ := os.ReadFile(filepath.Join(filepath.Dir(r.Socket), "roam.log"))
		return string(b)
	}
	if out, err := r.Connect("corp", 20*time.Second); err != nil {
		t.Fatalf("connect: %v\n%s\n%s", err, out, gw.Log())
	}
	if err := l.WaitPing(lab.Client, lab.HostAddr.Addr(), 5*time.Second); err != nil {
		t.Fatalf("ping through the tunnel: %v", err)
	}
	acct := startEchoAccount(t, l)
	evp, err := l.Start(lab.Client, bin, "events", "--socket", r.Socket, "--json")
	if err != nil {
		t.Fatal(err)
	}
	defer evp.Stop()
	ping := startPinger(t, l, run)
	tcp := tcpInBackground(l.TCPTransferRate, run-5*time.Second, rate)
	sent, recv := ping.result(t, 2*run)
	tcpErr := <-tcp
	verdict := acct.verdict(t, sent, recv)
	roamChild, roamIKE := countRekeys(gw.Log(), "parsed CREATE_CHILD_SA request")
	swanChild, swanIKE := countRekeys(gw.Log(), "generating CREATE_CHILD_SA request")
	lost := sent - recv
	t.Logf("soak %v: %s; rekeys started by roam: %d Child + %d IKE, by strongSwan: %d Child + %d IKE (strongSwan's log)",
		run, verdict, roamChild, roamIKE, swanChild, swanIKE)
	st, _, _ := r.Status()
	var roamDrops string
	for _, s := range st {
		if s.Name == "corp" {
			roamDrops = strings.Join(strings.Fields(string(s.Drops)), " ")
		}
	}
	t.Logf("roam's drops %s", roamDrops)
	if lost > 0 {
		t.Logf("lost echoes:\n%s", lossReport(ping.proc.Output(), gw.Log(), roamLog(), evp.Output()))
	}
	if t.Failed() || verdict.unexplained() > 0 || tcpErr != nil || roamChild+roamIKE < 5 || swanChild+swanIKE < 5 {
		t.Logf("strongSwan gateway log:\n%s\nroam log:\n%s", gw.Log(), roamLog())
	}
	if tcpErr != nil {
		t.Errorf("TCP transfer through the rekeys: %v", tcpErr)
	}
	if roamChild+roamIKE < 5 || swanChild+swanIKE < 5 {
		t.Errorf("too few rekeys started by each side")
	}
	if n := verdict.unexplained(); n > 0 {
		t.Errorf("%d of %d echoes lost that no congestion drop explains (%s)", n, sent, verdict)
	}
}

// echoCounters counts, in the host's namespace, the echo requests that
// arrive through the tunnel and the replies that leave.
type echoCounters struct {
	l     *lab.Lab
	table string
}

func newEchoCounters(t *testing.T, l *lab.Lab) *echoCounters {
	t.Helper()
	c := &echoCounters{l: l, table: "soakcount"}
	rules := fmt.Sprintf(`table ip %s {
  chain in { type filter hook input priority 0; icmp type echo-request counter; }
  chain out { type filter hook output priority 0; icmp type echo-reply counter; }
}`, c.table)
	// A lab serves several subtests: start from zero.
	_ = l.Exec(lab.Host, "nft", "delete", "table", "ip", c.table)
	f := filepath.Join(l.Dir, "soak.nft")
	if err := os.WriteFile(f, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Output(lab.Host, "nft", "-f", f); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	return c
}

var nftPackets = regexp.MustCompile(`counter packets (\d+)`)

func (c *echoCounters) read(t *testing.T) (requests, replies int) {
	t.Helper()
	out, err := c.l.Output(lab.Host, "nft", "list", "table", "ip", c.table)
	if err != nil {
		t.Fatalf("nft list: %v\n%s", err, out)
	}
	m := nftPackets.FindAllStringSubmatch(out, -1)
	if len(m) != 2 {
		t.Fatalf("nft counters:\n%s", out)
	}
	requests, _ = strconv.Atoi(m[0][1])
	replies, _ = strconv.Atoi(m[1][1])
	return requests, replies
}

// echoAccount splits lost echoes by where they went missing: requests
// that never reached the host, replies that never reached the client. On
// this shared 2-CPU machine strongSwan's userspace ESP (kernel-libipsec)
// sometimes falls behind a TCP transfer and its UDP socket overflows
// (RcvbufErrors in the gateway's namespace), which costs echo requests
// at any moment, rekey or not; such losses are counted as congestion.
// Anything else is the tunnel's fault.
type echoAccount struct {
	cnt    *echoCounters
	l      *lab.Lab
	before map[string]int
}

func startEchoAccount(t *testing.T, l *lab.Lab) *echoAccount {
	t.Helper()
	return &echoAccount{cnt: newEchoCounters(t, l), l: l, before: netDrops(l)}
}

type echoVerdict struct {
	sent, recv, hostRequests, hostReplies int
	drops                                 map[string]int // kernel drop counters that moved
}

func (a *echoAccount) verdict(t *testing.T, sent, recv int) echoVerdict {
	t.Helper()
	v := echoVerdict{sent: sent, recv: recv, drops: map[string]int{}}
	v.hostRequests, v.hostReplies = a.cnt.read(t)
	for k, n := range netDrops(a.l) {
		if d := n - a.before[k]; d != 0 {
			v.drops[k] = d
		}
	}
	return v
}

// unexplained is the number of lost echoes the gateway's socket overflows
// do not account for: every lost reply, and lost requests beyond the
// packets the gateway's kernel dropped for a full receive buffer.
func (v echoVerdict) unexplained() int {
	lostOut := v.sent - v.hostRequests
	lostIn := v.hostReplies - v.recv
	return lostIn + max(0, lostOut-v.drops[lab.Gateway+"/udp.RcvbufErrors"])
}

func (v echoVerdict) String() string {
	return fmt.Sprintf("%d echoes sent, %d answered, %d lost: %d requests never reached the host, %d replies never reached the client; kernel drop counters that moved: %v",
		v.sent, v.recv, v.sent-v.recv, v.sent-v.hostRequests, v.hostReplies-v.recv, v.drops)
}

var (
	pingReply  = regexp.MustCompile(`icmp_seq=(\d+) ttl=`)
	pingNoAns  = regexp.MustCompile(`^\[(\d+)\.(\d+)\] no answer yet for icmp_seq=(\d+)`)
	swanTime   = regexp.MustCompile(`^\s*(\d\d):(\d\d):(\d\d)\.(\d{3}) `)
	roamTime   = regexp.MustCompile(`(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)`)
	eventTime  = regexp.MustCompile(`"time":"([^"]+)"`)
	rekeyLines = regexp.MustCompile(`CHILD_SA|IKE_SA|DELETE|CREATE_CHILD_SA|INFORMATIONAL`)
)

// lossReport lists the lost echoes (grouped into bursts), each with when
// it was sent and what strongSwan, roam's log and roam's events say
// within a second of it.
func lossReport(pingOut, swanLog, roamLog, events string) string {
	replied := map[int]bool{}
	sentAt := map[int]time.Time{}
	maxSeq := 0
	for _, line := range strings.Split(pingOut, "\n") {
		if m := pingReply.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			replied[n] = true
			maxSeq = max(maxSeq, n)
		}
		if m := pingNoAns.FindStringSubmatch(line); m != nil {
			sec, _ := strconv.ParseInt(m[1], 10, 64)
			usec, _ := strconv.ParseInt(m[2], 10, 64)
			n, _ := strconv.Atoi(m[3])
			if _, ok := sentAt[n]; !ok {
				sentAt[n] = time.Unix(sec, usec*1000).UTC()
			}
			maxSeq = max(maxSeq, n)
		}
	}
	var lost []int
	for n := 1; n <= maxSeq; n++ {
		if !replied[n] {
			lost = append(lost, n)
		}
	}
	sort.Ints(lost)
	var b strings.Builder
	for i := 0; i < len(lost); {
		j := i
		for j+1 < len(lost) && lost[j+1] <= lost[j]+5 {
			j++
		}
		at := sentAt[lost[i]]
		fmt.Fprintf(&b, "icmp_seq %d-%d (%d lost), sent about %s\n", lost[i], lost[j], j-i+1, at.Format("15:04:05.000"))
		if !at.IsZero() {
			near := func(t time.Time) bool { d := t.Sub(at); return d > -1500*time.Millisecond && d < time.Second }
			day := at.Truncate(24 * time.Hour)
			for _, line := range strings.Split(swanLog, "\n") {
				m := swanTime.FindStringSubmatch(line)
				if m == nil || !rekeyLines.MatchString(line) {
					continue
				}
				h, _ := strconv.Atoi(m[1])
				mi, _ := strconv.Atoi(m[2])
				s, _ := strconv.Atoi(m[3])
				ms, _ := strconv.Atoi(m[4])
				lt := day.Add(time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute + time.Duration(s)*time.Second + time.Duration(ms)*time.Millisecond)
				if near(lt) {
					fmt.Fprintf(&b, "  strongSwan %s\n", strings.TrimSpace(line))
				}
			}
			for _, line := range strings.Split(roamLog, "\n") {
				if m := roamTime.FindStringSubmatch(line); m != nil {
					if lt, err := time.Parse("2006/01/02 15:04:05", m[1]); err == nil && lt.Sub(at.Truncate(time.Second)).Abs() <= time.Second {
						fmt.Fprintf(&b, "  roam %s\n", strings.TrimSpace(line))
					}
				}
			}
			for _, line := range strings.Split(events, "\n") {
				if m := eventTime.FindStringSubmatch(line); m != nil {
					if lt, err := time.Parse(time.RFC3339Nano, m[1]); err == nil && near(lt) {
						fmt.Fprintf(&b, "  event %s\n", strings.TrimSpace(line))
					}
				}
			}
		}
		i = j + 1
	}
	return b.String()
}

// netDrops reads the kernel's drop counters in the namespaces on the
// tunnel's way: UDP socket buffer overflows and errors, and per-interface
// receive and transmit drops.
func netDrops(l *lab.Lab) map[string]int {
	out := map[string]int{}
	for _, ns := range []string{lab.Client, lab.NATWLAN, lab.Inet, lab.Gateway, lab.Host} {
		if snmp, err := l.Cmd(ns, "cat", "/proc/net/snmp").Output(); err == nil {
			var names []string
			for _, line := range strings.Split(string(snmp), "\n") {
				f := strings.Fields(line)
				if len(f) == 0 || f[0] != "Udp:" {
					continue
				}
				if names == nil {
					names = f[1:]
					continue
				}
				for i, v := range f[1:] {
					if i < len(names) && (strings.Contains(names[i], "Errors") || names[i] == "NoPorts") {
						n, _ := strconv.Atoi(v)
						out[ns+"/udp."+names[i]] = n
					}
				}
			}
		}
		if dev, err := l.Cmd(ns, "cat", "/proc/net/dev").Output(); err == nil {
			for _, line := range strings.Split(string(dev), "\n")[2:] {
				name, rest, ok := strings.Cut(line, ":")
				f := strings.Fields(rest)
				if !ok || len(f) < 12 {
					continue
				}
				rx, _ := strconv.Atoi(f[3])
				tx, _ := strconv.Atoi(f[11])
				out[ns+"/"+strings.TrimSpace(name)+".rx_drop"] = rx
				out[ns+"/"+strings.TrimSpace(name)+".tx_drop"] = tx
			}
		}
	}
	// The per-CPU backlog (veth delivers through it) is the host's, in no
	// namespace: its second column counts packets it had no room for.
	if b, err := os.ReadFile("/proc/net/softnet_stat"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 {
				n, _ := strconv.ParseInt(f[1], 16, 64)
				out["softnet.dropped"] += int(n)
			}
		}
	}
	return out
}
