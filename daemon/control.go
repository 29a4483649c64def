package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roam-vpn/roam/report"
)

// The control protocol is JSON lines over a unix socket: the client sends
// one request line; the daemon answers with zero or more event lines and,
// except for an events stream, one final line with done set.

// Control operations.
const (
	OpConnect    = "connect"
	OpDisconnect = "disconnect"
	OpStatus     = "status"
	OpEvents     = "events"
	OpSwitch     = "switch" // gateway only: SWITCH_TO_IP_ADDRESS to one client
)

// Request is the one line a client sends.
type Request struct {
	Op      string `json:"op"`
	Profile string `json:"profile,omitempty"`
	Config  string `json:"config,omitempty"` // absolute path of the profile file, for connect
	All     bool   `json:"all,omitempty"`    // disconnect every profile
	// Password is the EAP password `roam connect` asked for, for a
	// profile without password_file. It is used for that connection
	// only: never logged, stored or echoed.
	Password []byte `json:"password,omitempty"`
	// Peer and To are a switch request's client (identity, address or
	// address:port) and the gateway address it is asked to move to.
	Peer string `json:"peer,omitempty"`
	To   string `json:"to,omitempty"`
	// Handoff is what `roam connect` started of the connection while the
	// daemon started (tunnel.Handoff), the sockets it names passed with
	// the request line as SCM_RIGHTS. It carries key material: never
	// logged or echoed.
	Handoff json.RawMessage `json:"handoff,omitempty"`
}

// Reply is one line the daemon sends back.
type Reply struct {
	Event        *Event        `json:"event,omitempty"`
	Done         bool          `json:"done,omitempty"`
	Error        string        `json:"error,omitempty"`
	Status       []Status      `json:"status,omitempty"`
	Disconnected []string      `json:"disconnected,omitempty"`
	Switch       *SwitchResult `json:"switch,omitempty"`
}

// maxRequest bounds a request line; real ones are a few hundred bytes.
const maxRequest = 64 << 10

// requestTimeout is how long a client may take to send its request line.
const requestTimeout = 10 * time.Second

// backend is what a control socket serves: the client daemon's manager or
// the gateway.
type backend interface {
	connect(ctx context.Context, profile, configPath string, password []byte, progress func(Event)) (Status, error)
	disconnect(ctx context.Context, name string, all bool) ([]string, error)
	status(name string) ([]Status, error)
	events(ctx context.Context) <-chan Event
	switchPeer(ctx context.Context, peer, to string) (SwitchResult, error)
}

// ErrDaemonRunning is returned by ListenControl when a daemon already answers on
// the socket.
var ErrDaemonRunning = errors.New("a daemon is already listening")

// ListenControl creates the control socket at path: its directory 0700 if it has
// to be made, the socket 0600. A socket file left by a dead daemon is
// replaced; a live one is an error.
func ListenControl(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: %w", path, ErrDaemonRunning)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("stale control socket: %w", err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// The directory is private already when we made it; the mode covers a
	// shared directory such as a test's.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// We remove the file ourselves, and only if it is still ours.
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// ShareControl gives group read access to the control socket at path:
// the socket 0660 and its directory 0750, both in that group. Members may
// then run status and events; everything else stays with root (see
// privileged).
func ShareControl(path, group string) error {
	g, err := user.LookupGroup(group)
	if err != nil {
		return fmt.Errorf("socket_group: %w", err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("socket_group: group %q has gid %q", group, g.Gid)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Dir(path), 0o750}, {path, 0o660}} {
		if err := os.Lchown(f.path, -1, gid); err != nil {
			return fmt.Errorf("socket_group: %w", err)
		}
		if err := os.Chmod(f.path, f.mode); err != nil {
			return fmt.Errorf("socket_group: %w", err)
		}
	}
	return nil
}

// readOnly are the operations a peer that is neither root nor the daemon's
// own user may ask for: a socket_group member reads, it does not steer.
var readOnly = map[string]bool{OpStatus: true, OpEvents: true}

// privileged reports whether the peer on c is root or runs as the daemon's
// user (SO_PEERCRED).
func privileged(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return cred.Uid == 0 || int(cred.Uid) == os.Geteuid()
}

// server answers control connections for a backend.
type server struct {
	ln   *net.UnixListener
	path string
	b    backend
	log  *slog.Logger

	// Event streams end at soft shutdown; everything else gets a grace
	// period to send its final line before the hard stop.
	soft, hard             context.Context
	softCancel, hardCancel context.CancelFunc
	wg                     sync.WaitGroup
	fi                     os.FileInfo
}

func newServer(ln *net.UnixListener, b backend, log *slog.Logger) *server {
	s := &server{ln: ln, path: ln.Addr().String(), b: b, log: log}
	s.hard, s.hardCancel = context.WithCancel(context.Background())
	s.soft, s.softCancel = context.WithCancel(s.hard)
	s.fi, _ = os.Stat(s.path)
	s.wg.Add(1)
	go s.accept()
	return s
}

func (s *server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.soft.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("control socket accept", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go s.handle(c)
	}
}

// shutdown stops accepting, ends event streams, gives the other requests
// until ctx ends to finish, then cuts them off and removes the socket file.
func (s *server) shutdown(ctx context.Context) {
	s.softCancel()
	s.ln.Close()
	if !waitOrDone(ctx, &s.wg) {
		s.hardCancel()
		s.wg.Wait()
	}
	s.hardCancel()
	// Another daemon may have replaced a socket we lost; leave theirs.
	if fi, err := os.Stat(s.path); err == nil && s.fi != nil && os.SameFile(fi, s.fi) {
		os.Remove(s.path)
	}
}

func (s *server) handle(c *net.UnixConn) {
	defer s.wg.Done()
	defer c.Close()
	stop := context.AfterFunc(s.hard, func() { c.Close() })
	defer stop()

	c.SetReadDeadline(time.Now().Add(requestTimeout))
	line, files, err := readRequest(c)
	// Only a connect takes descriptors over, and only as long as it runs.
	defer closeFiles(files)
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	enc := json.NewEncoder(c)
	var mu sync.Mutex // progress events and the final line share enc
	send := func(rep Reply) error {
		mu.Lock()
		defer mu.Unlock()
		return enc.Encode(rep)
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		send(Reply{Done: true, Error: fmt.Sprintf("bad request: %v", err)})
		return
	}

	if !readOnly[req.Op] && !privileged(c) {
		send(Reply{Done: true, Error: fmt.Sprintf("permission denied: only root may %s; the socket's group may read status and events", req.Op)})
		return
	}

	// A client that hangs up (Ctrl-C on connect, the end of `roam
	// events`) cancels its request.
	parent := s.hard
	if req.Op == OpEvents {
		parent = s.soft
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	go func() {
		io.Copy(io.Discard, c)
		cancel()
	}()

	switch req.Op {
	case OpConnect:
		if len(req.Handoff) > 0 {
			ctx = report.WithHandoff(ctx, report.Handoff{State: req.Handoff, Files: files})
		}
		st, err := s.b.connect(ctx, req.Profile, req.Config, req.Password, func(ev Event) {
			send(Reply{Event: &ev})
		})
		if err != nil {
			send(Reply{Done: true, Error: err.Error()})
			return
		}
		send(Reply{Done: true, Status: []Status{st}})
	case OpDisconnect:
		names, err := s.b.disconnect(ctx, req.Profile, req.All)
		rep := Reply{Done: true, Disconnected: names}
		if err != nil {
			rep.Error = err.Error()
		}
		send(rep)
	case OpStatus:
		st, err := s.b.status(req.Profile)
		if err != nil {
			send(Reply{Done: true, Error: err.Error()})
			return
		}
		if st == nil {
			st = []Status{}
		}
		send(Reply{Done: true, Status: st})
	case OpSwitch:
		res, err := s.b.switchPeer(ctx, req.Peer, req.To)
		if err != nil {
			send(Reply{Done: true, Error: err.Error()})
			return
		}
		send(Reply{Done: true, Switch: &res})
	case OpEvents:
		for ev := range s.b.events(ctx) {
			if err := send(Reply{Event: &ev}); err != nil {
				return
			}
		}
	default:
		send(Reply{Done: true, Error: fmt.Sprintf("unknown operation %q", req.Op)})
	}
}

// maxPassedFiles bounds the descriptors a request may pass (a handoff's
// two sockets); the kernel closes any beyond the control buffer.
const maxPassedFiles = 4

// readRequest reads the request line and the descriptors passed with it.
func readRequest(c *net.UnixConn) (line []byte, files []*os.File, err error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(maxPassedFiles*4))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if oobn > 0 {
			files = append(files, passedFiles(oob[:oobn])...)
		}
		line = append(line, buf[:n]...)
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			return line[:i+1], files, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) && len(line) > 0 {
				return line, files, nil
			}
			return nil, files, err
		}
		if n == 0 {
			if len(line) > 0 {
				return line, files, nil
			}
			return nil, files, io.EOF
		}
		if len(line) > maxRequest {
			return nil, files, errors.New("request too long")
		}
	}
}

// passedFiles are the descriptors in the control messages oob holds.
func passedFiles(oob []byte) []*os.File {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var files []*os.File
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "passed"))
		}
	}
	return files
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// ErrNoDaemon means nothing listens on the control socket.
var ErrNoDaemon = errors.New("no daemon is running")

// Client talks to a daemon's control socket.
type Client struct {
	Socket string
}

func (c Client) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.Socket)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (nothing listens on %s)", ErrNoDaemon, c.Socket)
		}
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return conn, nil
}

// call sends req and reads replies until the final one, handing events to
// onEvent.
func (c Client) call(ctx context.Context, req Request, onEvent func(Event)) (Reply, error) {
	return c.callPassing(ctx, req, nil, onEvent)
}

// callPassing is call passing files with the request line.
func (c Client) callPassing(ctx context.Context, req Request, files []*os.File, onEvent func(Event)) (Reply, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return Reply{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	line, err := json.Marshal(req)
	if err != nil {
		return Reply{}, fmt.Errorf("control socket: %w", err)
	}
	line = append(line, '\n')
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := conn.(*net.UnixConn).WriteMsgUnix(line, oob, nil); err != nil {
		return Reply{}, fmt.Errorf("control socket: %w", err)
	}
	dec := json.NewDecoder(bufio.NewReader(conn))
	for {
		var rep Reply
		if err := dec.Decode(&rep); err != nil {
			if ctx.Err() != nil {
				return Reply{}, ctx.Err()
			}
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET) {
				return Reply{}, errors.New("the daemon closed the connection")
			}
			return Reply{}, fmt.Errorf("control socket: %w", err)
		}
		if rep.Event != nil && onEvent != nil {
			onEvent(*rep.Event)
		}
		if rep.Done {
			if rep.Error != "" {
				return rep, errors.New(rep.Error)
			}
			return rep, nil
		}
	}
}

// Ping checks that a daemon answers.
func (c Client) Ping(ctx context.Context) error {
	_, err := c.call(ctx, Request{Op: OpStatus}, nil)
	return err
}

// Connect asks the daemon to connect the profile from the file at
// configPath, passing progress events to progress until it is established
// or has failed. The error text is the daemon's one-line reason.
func (c Client) Connect(ctx context.Context, profile, configPath string, progress func(Event)) (Status, error) {
	return c.ConnectPassword(ctx, profile, configPath, nil, progress)
}

// ConnectPassword is Connect for a profile whose EAP password was asked
// for (see config.Profile.NeedsPassword).
func (c Client) ConnectPassword(ctx context.Context, profile, configPath string, password []byte, progress func(Event)) (Status, error) {
	abs, err := filepath.Abs(configPath)
	if err != nil {
		return Status{}, err
	}
	rep, err := c.call(ctx, Request{Op: OpConnect, Profile: profile, Config: abs, Password: password}, progress)
	if err != nil {
		return Status{}, err
	}
	if len(rep.Status) != 1 {
		return Status{}, errors.New("daemon sent no status for the connection")
	}
	return rep.Status[0], nil
}

// ConnectHandoff is ConnectPassword passing what this process started of
// the connection (tunnel.Handoff: its state, and files, its sockets),
// for the daemon to go on from.
func (c Client) ConnectHandoff(ctx context.Context, profile, configPath string, password, handoff []byte, files []*os.File, progress func(Event)) (Status, error) {
	abs, err := filepath.Abs(configPath)
	if err != nil {
		return Status{}, err
	}
	rep, err := c.callPassing(ctx, Request{Op: OpConnect, Profile: profile, Config: abs, Password: password, Handoff: handoff}, files, progress)
	if err != nil {
		return Status{}, err
	}
	if len(rep.Status) != 1 {
		return Status{}, errors.New("daemon sent no status for the connection")
	}
	return rep.Status[0], nil
}

// Disconnect closes one profile's connection.
func (c Client) Disconnect(ctx context.Context, profile string) error {
	_, err := c.call(ctx, Request{Op: OpDisconnect, Profile: profile}, nil)
	return err
}

// DisconnectAll closes every connection and returns their names.
func (c Client) DisconnectAll(ctx context.Context) ([]string, error) {
	rep, err := c.call(ctx, Request{Op: OpDisconnect, All: true}, nil)
	return rep.Disconnected, err
}

// Status returns the named connection, or all of them for "".
func (c Client) Status(ctx context.Context, profile string) ([]Status, error) {
	rep, err := c.call(ctx, Request{Op: OpStatus, Profile: profile}, nil)
	return rep.Status, err
}

// Events streams events to fn until ctx ends (then it returns nil) or the
// daemon goes away.
func (c Client) Events(ctx context.Context, fn func(Event)) error {
	_, err := c.call(ctx, Request{Op: OpEvents}, fn)
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = errors.New("the daemon ended the event stream")
	}
	return err
}

// Switch asks a gateway to move one client's SAs to its address to
// (SWITCH_TO_IP_ADDRESS). peer is the client's identity, or its current
// address or address:port as `roam status` shows it.
func (c Client) Switch(ctx context.Context, peer, to string) (SwitchResult, error) {
	rep, err := c.call(ctx, Request{Op: OpSwitch, Peer: peer, To: to}, nil)
	if err != nil {
		return SwitchResult{}, err
	}
	if rep.Switch == nil {
		return SwitchResult{}, errors.New("gateway sent no result for the switch")
	}
	return *rep.Switch, nil
}
