package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestUsageErrors(t *testing.T) {
	cfg, socket := setup(t)
	ctx := testCtx(t)
	tests := []struct {
		args   []string
		stderr string
	}{
		{[]string{"conect", "corp"}, `roam: unknown command "conect"; did you mean "connect"? (see roam --help)`},
		{[]string{"stauts"}, `did you mean "status"?`},
		{[]string{"launch"}, `roam: unknown command "launch" (see roam --help)`},
		{[]string{"connect", "--conifg", cfg, "corp"}, "roam: connect: unknown flag --conifg; did you mean --config? (see roam connect --help)"},
		{[]string{"status", "--jsn"}, "did you mean --json?"},
		{[]string{"--verison"}, "did you mean --version?"},
		{[]string{"gateway", "switch", "--peer", "a", "--tox", "b"}, "roam: switch: unknown flag --tox; did you mean --to? (see roam gateway switch --help)"},
		{[]string{"gateway", "switch", "--peer", "a"}, `Required flag "to" not set`},
		{[]string{"status", "--socket", socket, "a", "b"}, "status: want at most one PROFILE"},
		{[]string{"version", "extra"}, "version: takes no arguments"},
		{[]string{"completion"}, "completion: want one shell"},
		{[]string{"completion", "fsh"}, `unknown shell "fsh"; did you mean "fish"?`},
		{[]string{"check", "--config", cfg, "--bogus"}, "unknown flag --bogus"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := roam(ctx, tt.args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, tt.stderr) {
				t.Errorf("got %+v, want exit %d and %q", r, exitUsage, tt.stderr)
			}
			if strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", r.stderr)
			}
		})
	}
}

func TestFlagsFirst(t *testing.T) {
	app := newApp(nil, nil, fakeEngines())
	tests := []struct{ in, want string }{
		{"roam connect corp --config f --foreground", "roam connect --config f --foreground corp"},
		{"roam connect corp --config=f", "roam connect --config=f corp"},
		{"roam connect --socket s corp --foreground", "roam connect --socket s --foreground corp"},
		{"roam status corp --json", "roam status --json corp"},
		{"roam disconnect corp --socket s", "roam disconnect --socket s corp"},
		{"roam gateway --config g switch --peer a --to b", "roam gateway --config g switch --peer a --to b"},
		{"roam gateway switch --peer a --to b --socket s", "roam gateway switch --peer a --to b --socket s"},
		{"roam check corp home --config f", "roam check --config f corp home"},
		{"roam connect -- -odd --config f", "roam connect -- -odd --config f"},
		{"roam connect corp --unknown", "roam connect --unknown corp"},
		{"roam connect corp --config f --generate-bash-completion", "roam connect --config f corp --generate-bash-completion"},
		{"roam --version", "roam --version"},
		{"roam", "roam"},
	}
	for _, tt := range tests {
		if got := strings.Join(flagsFirst(app, strings.Fields(tt.in)), " "); got != tt.want {
			t.Errorf("%s\n got %s\nwant %s", tt.in, got, tt.want)
		}
	}
}

// Flags after the profile name work end to end.
func TestFlagsAfterProfile(t *testing.T) {
	cfg, socket := setup(t)
	ctx := testCtx(t)
	r := roam(ctx, "connect", "nope", "--socket", socket, "--config", cfg)
	if r.code != exitConfig || !strings.Contains(r.stderr, cfg+`: no profile "nope"`) {
		t.Errorf("connect nope --config: %+v", r)
	}
	r = roam(ctx, "status", "corp", "--socket", socket, "--json")
	if r.code != exitFailure || r.stderr != "roam: corp: not connected\n" {
		t.Errorf("status corp --json: %+v", r)
	}
}

func TestConnectFailureCodes(t *testing.T) {
	tests := []struct {
		msg  string
		code int
	}{
		{"authentication failed: gateway sent AUTHENTICATION_FAILED", exitAuth},
		{"no proposal chosen: gateway sent NO_PROPOSAL_CHOSEN", exitNegotiation},
		{"traffic selectors unacceptable: TS_UNACCEPTABLE", exitNegotiation},
		{"gateway unreachable: no response to IKE_SA_INIT after 5 retransmissions", exitUnreachable},
		{`gateway "vpn.example.com": cannot resolve: no such host`, exitUnreachable},
		{"the daemon closed the connection", exitFailure},
	}
	for _, tt := range tests {
		err := fmt.Errorf("connect corp: %w", connectFailure(errors.New(tt.msg)))
		if got := exitCode(err); got != tt.code {
			t.Errorf("%q: exit %d, want %d", tt.msg, got, tt.code)
		}
	}
	if exitCode(nil) != exitOK || exitCode(fmt.Errorf("x: %w", fs.ErrPermission)) != exitPermission {
		t.Error("nil or permission error mapped wrongly")
	}
}

// A user who may not open the socket is told how to get in.
func TestSocketDenied(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		gid  int
		mode os.FileMode
		want string
	}{
		{"root only", 0, 0o600, "run it with sudo, or set socket_group in the profile file"},
		{"group", 4242, 0o660, `run it with sudo, or join group "4242", which may read status and events`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name+".sock")
			ln, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Lchown(path, -1, tt.gid); err != nil {
				t.Skipf("cannot chown the socket (not root?): %v", err)
			}
			err = socketDenied(path, fmt.Errorf("control socket: %w", fs.ErrPermission))
			if exitCode(err) != exitPermission || !strings.Contains(err.Error(), "permission denied on "+path+": "+tt.want) {
				t.Errorf("got %v (exit %d)", err, exitCode(err))
			}
		})
	}
	if err := socketDenied("/x", errors.New("other")); err.Error() != "other" {
		t.Errorf("a non-permission error changed: %v", err)
	}
}

func TestCheckCommand(t *testing.T) {
	cfg, _ := setup(t)
	ctx := testCtx(t)
	r := roam(ctx, "check", "--config", cfg)
	if r.code != 0 || r.stdout != cfg+": profile file OK\n" {
		t.Errorf("check good file: %+v", r)
	}
	broken := filepath.Join(t.TempDir(), "roam.toml")
	body := readFile(cfg) + "[profiles.legacy]\ngateway = \"gw\"\nlocal_id = \"a\"\nremote_id = \"b\"\nauth = \"psk\"\npsk_file = \"/nonexistent.psk\"\nike = [\"aes128-sha1-modp1024\"]\n"
	if err := os.WriteFile(broken, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	r = roam(ctx, "check", "--config", broken)
	wantOut := broken + `: profile "legacy": psk_file: stat /nonexistent.psk: no such file or directory` + "\n"
	if r.code != exitFailure || r.stdout != wantOut || r.stderr != "roam: check: 1 problem(s) in "+broken+"\n" {
		t.Errorf("check broken file: %+v\nwant stdout %q", r, wantOut)
	}
	// The other profiles still connect (here: still load for connect).
	if r := roam(ctx, "check", "corp", "--config", broken); r.code != 0 {
		t.Errorf("check corp in the broken file: %+v", r)
	}
}

// The completion scripts load in a real shell and complete commands,
// flags and the profiles of the file.
func TestCompletionInShell(t *testing.T) {
	cfg, _ := setup(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(exe, filepath.Join(bin, "roam")); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), fakeDaemonEnv+"=1", "ROAM_CONFIG="+cfg, "PATH="+bin+":"+os.Getenv("PATH"))
	tests := []struct {
		shell  string
		script string
		want   []string
	}{
		{"bash", `source <(roam completion bash); COMP_WORDS=(roam con); COMP_CWORD=1; _roam_complete; echo "${COMPREPLY[@]}"`, []string{"connect"}},
		{"bash", `source <(roam completion bash); COMP_WORDS=(roam connect ""); COMP_CWORD=2; _roam_complete; echo "${COMPREPLY[@]}"`, []string{"bad", "corp"}},
		{"bash", `source <(roam completion bash); COMP_WORDS=(roam connect --fo); COMP_CWORD=2; _roam_complete; echo "${COMPREPLY[@]}"`, []string{"--foreground"}},
		{"fish", `roam completion fish | source; complete -C "roam con"`, []string{"connect"}},
		{"fish", `roam completion fish | source; complete -C "roam connect "`, []string{"corp"}},
		{"zsh", `autoload -Uz compinit && compinit -u && source <(roam completion zsh) && whence -w _roam`, []string{"_roam: function"}},
	}
	for _, tt := range tests {
		t.Run(tt.shell, func(t *testing.T) {
			path, err := exec.LookPath(tt.shell)
			if err != nil {
				t.Skipf("%s not installed", tt.shell)
			}
			cmd := exec.Command(path, "-c", tt.script)
			cmd.Env = env
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("%q printed %q, want %q", tt.script, out, w)
				}
			}
		})
	}
}

// The systemd units, with ExecStart pointing at a roam binary, pass
// systemd-analyze verify.
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	bin := filepath.Dir(copyExecutable(t))
	dir := t.TempDir()
	units, err := filepath.Glob("../../contrib/systemd/*.service.in")
	if err != nil || len(units) != 3 {
		t.Fatalf("units %v, %v: want roam.service.in, roam@.service.in and roam-gateway.service.in", units, err)
	}
	var paths []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(u), ".in")
		if name == "roam@.service" {
			name = "roam@corp.service" // verify an instance of the template
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), "@BINDIR@", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, path)
	}
	// --man=no: the man pages the units name need not be installed here.
	cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, paths...)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
