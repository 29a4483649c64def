package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// CharonBinary is Debian's path of the IKE daemon.
const CharonBinary = "/usr/lib/ipsec/charon"

// charonPlugins is the explicit plugin list. kernel-libipsec comes first so
// it provides the IPsec backend (this kernel has no ESP); kernel-netlink
// still handles addresses and routes. strongSwan 5.9.8 needs kdf with an
// explicit list, or IKE_SA_INIT fails with "KDF_PRF ... not supported".
// resolve is left out on purpose: it would rewrite resolv.conf.
const charonPlugins = "kernel-libipsec kernel-netlink socket-default vici random nonce " +
	"openssl aes sha1 sha2 hmac gcm chapoly gmp curve25519 x509 pem pkcs1 pkcs8 pubkey constraints kdf " +
	// EAP for the gateway role (package libcharon-extauth-plugins); MD4
	// and DES come from openssl's legacy provider.
	"eap-identity eap-mschapv2 eap-tls"

// CharonOptions configures one charon.
type CharonOptions struct {
	Conns []SwanConn
	PKI   *PKI // needed when a connection uses pubkey auth
	// InterfacesIgnore keeps interfaces out of charon's address lists
	// (MOBIKE): the protected-side interface on the gateway. The TUN device
	// ipsec0 is always added.
	InterfacesIgnore []string
	// LogLevel for the ike, cfg, knl and net subsystems (default 1).
	LogLevel int
	// Extra is appended inside the charon { } section of strongswan.conf.
	Extra string
}

// Charon is a strongSwan IKE daemon running in one lab namespace.
type Charon struct {
	lab     *Lab
	ns      string
	Dir     string // strongswan.conf, swanctl/, charon.log
	Conf    string // strongswan.conf path
	LogFile string
	URI     string // vici socket for swanctl --uri
	proc    *Proc
}

// StartCharon starts charon in ns with a private /run (its pid file path is
// compiled in), its own strongswan.conf and vici socket, loads opts.Conns and
// returns once vici answers.
func (l *Lab) StartCharon(ns string, opts CharonOptions) (*Charon, error) {
	dir, err := os.MkdirTemp(l.Dir, "swan-"+ns+"-")
	if err != nil {
		return nil, fmt.Errorf("charon: %w", err)
	}
	c := &Charon{
		lab:     l,
		ns:      ns,
		Dir:     dir,
		Conf:    filepath.Join(dir, "strongswan.conf"),
		LogFile: filepath.Join(dir, "charon.log"),
		URI:     "unix://" + filepath.Join(dir, "charon.vici"),
	}
	level := opts.LogLevel
	if level == 0 {
		level = 1
	}
	ignore := append([]string{"ipsec0"}, opts.InterfacesIgnore...)
	conf := fmt.Sprintf(`charon {
  load = %s
  interfaces_ignore = %s
  install_virtual_ip = yes
  retransmit_tries = 3
  retransmit_timeout = 1.0
  plugins {
    vici {
      socket = %s
    }
  }
  filelog {
    lab {
      path = %s
      time_format = %%H:%%M:%%S
      time_add_ms = yes
      ike_name = yes
      default = %d
      flush_line = yes
    }
  }
  syslog {
    identifier = charon-lab
    daemon {
      default = -1
    }
  }
%s
}
swanctl {
  socket = %s
}
`, charonPlugins, strings.Join(ignore, ","), c.URI, c.LogFile, level, opts.Extra, c.URI)
	if err := os.WriteFile(c.Conf, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("charon: %w", err)
	}
	if err := c.writeSwanctl(opts); err != nil {
		return nil, err
	}
	cmd := l.Cmd(ns, "unshare", "-m", "--propagation", "private", "sh", "-c",
		"mount -t tmpfs none /run && exec "+CharonBinary)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+c.Conf)
	p, err := l.StartCmd(cmd)
	if err != nil {
		return nil, err
	}
	c.proc = p
	if err := c.waitVici(10 * time.Second); err != nil {
		c.Stop()
		return nil, fmt.Errorf("%w\n%s", err, c.Log())
	}
	if err := c.LoadConns(); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Charon) swanctlDir() string { return filepath.Join(c.Dir, "swanctl") }

func (c *Charon) writeSwanctl(opts CharonOptions) error {
	sd := c.swanctlDir()
	for _, sub := range []string{"x509ca", "x509", "private", "conf.d"} {
		if err := os.MkdirAll(filepath.Join(sd, sub), 0o700); err != nil {
			return fmt.Errorf("charon: %w", err)
		}
	}
	if opts.PKI != nil {
		for _, f := range []struct{ src, dst string }{
			{opts.PKI.CACert, "x509ca/ca.pem"},
			{opts.PKI.GatewayCrt, "x509/gateway.pem"},
			{opts.PKI.ClientCrt, "x509/client.pem"},
		} {
			if err := copyFile(f.src, filepath.Join(sd, f.dst)); err != nil {
				return err
			}
		}
		if opts.PKI.Intermediate != "" {
			// strongSwan loads one certificate a file and sends the
			// intermediate along once it knows it as a CA.
			if err := copyFile(opts.PKI.Intermediate, filepath.Join(sd, "x509ca", "intermediate.pem")); err != nil {
				return err
			}
		}
		// Only the key of the role this charon plays.
		key := opts.PKI.ClientKey
		for _, cn := range opts.Conns {
			if cn.Role == "gateway" {
				key = opts.PKI.GatewayKey
			}
		}
		if err := copyFile(key, filepath.Join(sd, "private", "key.pem")); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(sd, "swanctl.conf"), []byte(Swanctl(opts.Conns...)), 0o600); err != nil {
		return fmt.Errorf("charon: %w", err)
	}
	return nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("charon: %w", err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		return fmt.Errorf("charon: %w", err)
	}
	return nil
}

func (c *Charon) waitVici(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.Swanctl("--stats")
		if err == nil {
			return nil
		}
		select {
		case <-c.proc.Done():
			return fmt.Errorf("charon in %s exited: %v %s", c.ns, c.proc.err, c.proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("charon in %s: vici not answering after %v: %w", c.ns, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Swanctl runs swanctl against this charon with args and returns its output.
func (c *Charon) Swanctl(args ...string) (string, error) {
	return c.SwanctlContext(context.Background(), args...)
}

// SwanctlContext is Swanctl bounded by ctx.
func (c *Charon) SwanctlContext(ctx context.Context, args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("swanctl: no command")
	}
	// --uri is an option of each swanctl command, so it follows the command.
	argv := append([]string{"netns", "exec", c.lab.NS(c.ns), "swanctl", args[0], "--uri", c.URI}, args[1:]...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+c.Conf, "SWANCTL_DIR="+c.swanctlDir())
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("swanctl %s in %s: %w: %s", strings.Join(args, " "), c.ns, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// LoadConns (re)loads credentials, pools and connections from the swanctl
// directory.
func (c *Charon) LoadConns() error {
	_, err := c.Swanctl("--load-all", "--noprompt")
	return err
}

// Reconfigure replaces the connections and reloads them.
func (c *Charon) Reconfigure(opts CharonOptions) error {
	if err := c.writeSwanctl(opts); err != nil {
		return err
	}
	return c.LoadConns()
}

// Initiate brings up the child of connection name (client role) and waits
// for the result, bounded by timeout.
func (c *Charon) Initiate(name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout+2*time.Second)
	defer cancel()
	_, err := c.SwanctlContext(ctx, "--initiate", "--ike", name, "--child", name,
		"--timeout", fmt.Sprint(int(timeout.Seconds())))
	return err
}

// Terminate deletes the IKE SA of connection name.
func (c *Charon) Terminate(name string) error {
	_, err := c.Swanctl("--terminate", "--ike", name, "--timeout", "5")
	return err
}

// IKESA is what ListSAs extracts from `swanctl --list-sas`.
type IKESA struct {
	Conn       string
	State      string // ESTABLISHED, CONNECTING, ...
	Local      netip.AddrPort
	Remote     netip.AddrPort
	LocalID    string
	RemoteID   string
	EAPID      string       // remote's EAP identity, when it differs from RemoteID
	VirtualIPs []netip.Addr // remote's virtual IPs (gateway: the client's)
	LocalVIPs  []netip.Addr // our virtual IPs (client role)
	Proposal   string
	Children   []ChildSA
}

// ChildSA is one CHILD_SA line group of `swanctl --list-sas`.
type ChildSA struct {
	Name      string
	State     string // INSTALLED, REKEYED, ...
	Mode      string // e.g. TUNNEL-in-UDP
	Proposal  string
	SPIIn     string
	SPIOut    string
	LocalTS   []string
	RemoteTS  []string
	BytesIn   string
	BytesOut  string
	PacketsIn string
}

var (
	reIKE      = regexp.MustCompile(`^([^\s:]+): #\d+, (\w+), IKEv\d`)
	reEndpoint = regexp.MustCompile(`^\s+(local|remote)\s+'([^']*)' @ (\S+)\[(\d+)\](?: EAP: '([^']*)')?(?: XAuth: '[^']*')?(?: \[([^\]]*)\])?`)
	reChild    = regexp.MustCompile(`^\s+([^\s:]+): #\d+, reqid \d+, (\w+), ([\w-]+), (\S+)`)
	reTraffic  = regexp.MustCompile(`^\s+(in|out)\s+([0-9a-f]+)(?:\(0x[0-9a-f]+\))?,\s+(\d+) bytes,\s+(\d+) packets`)
	reTS       = regexp.MustCompile(`^\s+(local|remote)\s+(\d[\d./]*(?:\s+\S+)*)$`)
	reProposal = regexp.MustCompile(`^\s+([A-Z0-9_]+-?\d*(?:/[A-Z0-9_\-]+)+)$`)
)

// ListSAs parses `swanctl --list-sas`: IKE SAs with endpoints, identities,
// virtual IPs and their CHILD_SAs.
func (c *Charon) ListSAs() ([]IKESA, error) {
	out, err := c.Swanctl("--list-sas")
	if err != nil {
		return nil, err
	}
	return ParseListSAs(out)
}

// ParseListSAs parses the text output of `swanctl --list-sas`.
func ParseListSAs(out string) ([]IKESA, error) {
	var sas []IKESA
	var cur *IKESA
	var child *ChildSA
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := reIKE.FindStringSubmatch(line); m != nil {
			sas = append(sas, IKESA{Conn: m[1], State: m[2]})
			cur, child = &sas[len(sas)-1], nil
			continue
		}
		if cur == nil {
			continue
		}
		if m := reChild.FindStringSubmatch(line); m != nil {
			cur.Children = append(cur.Children, ChildSA{Name: m[1], State: m[2], Mode: m[3], Proposal: strings.TrimSuffix(m[4], ",")})
			child = &cur.Children[len(cur.Children)-1]
			continue
		}
		if child == nil {
			if m := reEndpoint.FindStringSubmatch(line); m != nil {
				// net.JoinHostPort brackets an IPv6 address, as
				// ParseAddrPort wants it; swanctl prints addr[port].
				ap, err := netip.ParseAddrPort(net.JoinHostPort(m[3], m[4]))
				if err != nil {
					return nil, fmt.Errorf("list-sas: %q: %w", line, err)
				}
				var vips []netip.Addr
				for _, v := range strings.Fields(m[6]) {
					if a, err := netip.ParseAddr(v); err == nil {
						vips = append(vips, a)
					}
				}
				if m[1] == "local" {
					cur.LocalID, cur.Local, cur.LocalVIPs = m[2], ap, vips
				} else {
					cur.RemoteID, cur.Remote, cur.VirtualIPs, cur.EAPID = m[2], ap, vips, m[5]
				}
				continue
			}
			if m := reProposal.FindStringSubmatch(line); m != nil && cur.Proposal == "" {
				cur.Proposal = m[1]
			}
			continue
		}
		if m := reTraffic.FindStringSubmatch(line); m != nil {
			if m[1] == "in" {
				child.SPIIn, child.BytesIn, child.PacketsIn = m[2], m[3], m[4]
			} else {
				child.SPIOut, child.BytesOut = m[2], m[3]
			}
			continue
		}
		if m := reTS.FindStringSubmatch(line); m != nil {
			if m[1] == "local" {
				child.LocalTS = append(child.LocalTS, strings.Fields(m[2])...)
			} else {
				child.RemoteTS = append(child.RemoteTS, strings.Fields(m[2])...)
			}
		}
	}
	return sas, sc.Err()
}

// WaitSA polls ListSAs until match accepts one SA (or none remain, when
// match is nil) or timeout passes; it returns the last listing.
func (c *Charon) WaitSA(timeout time.Duration, match func(IKESA) bool) ([]IKESA, error) {
	deadline := time.Now().Add(timeout)
	for {
		sas, err := c.ListSAs()
		if err == nil {
			if match == nil && len(sas) == 0 {
				return sas, nil
			}
			for _, sa := range sas {
				if match != nil && match(sa) {
					return sas, nil
				}
			}
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("no matching SA")
			}
			return sas, fmt.Errorf("charon in %s after %v: %w", c.ns, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Established accepts an ESTABLISHED IKE SA with an INSTALLED child.
func Established(sa IKESA) bool {
	if sa.State != "ESTABLISHED" {
		return false
	}
	for _, ch := range sa.Children {
		if ch.State == "INSTALLED" {
			return true
		}
	}
	return false
}

// Log returns charon's log so far (for test failure output).
func (c *Charon) Log() string {
	b, err := os.ReadFile(c.LogFile)
	if err != nil {
		return fmt.Sprintf("(no charon log: %v)", err)
	}
	return string(b)
}

// Stop terminates charon by its PID and waits for it.
func (c *Charon) Stop() {
	if c.proc != nil {
		c.proc.Stop()
	}
}

// PID of the charon process.
func (c *Charon) PID() int { return c.proc.PID() }
