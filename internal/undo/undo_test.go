package undo

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// otherProcess starts a child and returns its owner record; dead says
// whether it has been killed (and, without zombie, reaped) or still runs
// when the test looks.
func otherProcess(t *testing.T, dead, zombie bool) Owner {
	t.Helper()
	me, err := self()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep command: %v", err)
	}
	start, err := startTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	o := Owner{PID: cmd.Process.Pid, Start: start, NetNS: me.NetNS}
	switch {
	case dead && zombie:
		// Killed but not reaped: /proc still lists it, with state Z.
		cmd.Process.Kill()
		for {
			if _, state, err := procStat(o.PID); err != nil || state == "Z" {
				break
			}
			time.Sleep(time.Millisecond)
		}
		t.Cleanup(func() { cmd.Wait() })
	case dead:
		cmd.Process.Kill()
		cmd.Wait()
	default:
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	return o
}

func writeRaw(t *testing.T, d Dir, f file) {
	t.Helper()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(d.Path(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.fileName(f.Kind, f.Name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRecover(t *testing.T) {
	me, err := self()
	if err != nil {
		t.Fatal(err)
	}
	failing := errors.New("device busy")
	tests := []struct {
		name    string
		owner   func(t *testing.T) Owner
		kind    string
		version int
		handler error
		undone  bool
		wantErr bool
	}{
		{name: "killed owner", owner: func(t *testing.T) Owner { return otherProcess(t, true, false) }, kind: "tun", undone: true},
		{name: "killed owner not reaped", owner: func(t *testing.T) Owner { return otherProcess(t, true, true) }, kind: "tun", undone: true},
		{name: "running owner", owner: func(t *testing.T) Owner { return otherProcess(t, false, false) }, kind: "tun"},
		{name: "reused pid", owner: func(t *testing.T) Owner {
			o := otherProcess(t, false, false)
			o.Start++
			return o
		}, kind: "tun", undone: true},
		{name: "ourselves", owner: func(*testing.T) Owner { return me }, kind: "tun", undone: true},
		{name: "other namespace", owner: func(t *testing.T) Owner {
			o := otherProcess(t, true, false)
			o.NetNS++
			return o
		}, kind: "tun"},
		{name: "no handler", owner: func(t *testing.T) Owner { return otherProcess(t, true, false) }, kind: "dns"},
		{name: "other version", owner: func(t *testing.T) Owner { return otherProcess(t, true, false) }, kind: "tun", version: version + 1},
		{name: "handler fails", owner: func(t *testing.T) Owner { return otherProcess(t, true, false) }, kind: "tun", handler: failing, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDir(filepath.Join(t.TempDir(), "state"))
			v := tt.version
			if v == 0 {
				v = version
			}
			writeRaw(t, d, file{Version: v, Kind: tt.kind, Name: "corp", Owner: tt.owner(t), Data: json.RawMessage(`{"device":"roam-corp"}`)})
			var got []string
			handlers := map[string]Handler{"tun": func(name string, data json.RawMessage) error {
				var s struct{ Device string }
				if err := json.Unmarshal(data, &s); err != nil {
					return err
				}
				got = append(got, name+"/"+s.Device)
				return tt.handler
			}}
			undone, err := d.Recover(handlers)
			if (err != nil) != tt.wantErr || tt.wantErr && !errors.Is(err, failing) {
				t.Fatalf("Recover error %v, want error %v", err, tt.wantErr)
			}
			if tt.undone != (len(undone) == 1) {
				t.Fatalf("undone %v, want undone %v", undone, tt.undone)
			}
			if tt.undone && (len(got) != 1 || got[0] != "corp/roam-corp") {
				t.Errorf("handler saw %v, want [corp/roam-corp]", got)
			}
			_, statErr := os.Stat(d.fileName(tt.kind, "corp"))
			if kept := statErr == nil; kept == tt.undone {
				t.Errorf("state file kept %v after Recover, want %v", kept, !tt.undone)
			}
		})
	}
}

// TestRecoverUnreadable: a file that is not JSON is reported and removed,
// and the records beside it are still undone.
func TestRecoverUnreadable(t *testing.T) {
	d := NewDir(filepath.Join(t.TempDir(), "state"))
	if err := d.Record("tun", "corp", map[string]string{"device": "roam-corp"}); err != nil {
		t.Fatal(err)
	}
	bad := d.fileName("tun", "torn")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	undone, err := d.Recover(map[string]Handler{"tun": func(string, json.RawMessage) error { return nil }})
	if err == nil {
		t.Error("unreadable state not reported")
	}
	if len(undone) != 1 || undone[0].Name != "corp" {
		t.Errorf("undone %v, want the readable record", undone)
	}
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Errorf("unreadable state kept: %v", err)
	}
}

// TestRecordForget: a record is readable by Recover as written, a second
// record replaces the first, Forget removes it, and nothing else is left
// in the directory (no temporary files).
func TestRecordForget(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  func(string) Dir
	}{
		{"synced", NewDir},
		{"volatile", NewVolatileDir},
	} {
		t.Run(tc.name, func(t *testing.T) { testRecordForget(t, tc.dir(filepath.Join(t.TempDir(), "state"))) })
	}
}

func testRecordForget(t *testing.T, d Dir) {
	type state struct{ Routes []string }
	if err := d.Record("tun", "corp", state{Routes: []string{"10.0.0.0/8"}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Record("tun", "corp", state{Routes: []string{"10.0.0.0/8", "0.0.0.0/0"}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Record("lockdown", "corp", struct{}{}); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 2 {
		t.Fatalf("directory holds %d entries, want 2 (tun, lockdown)", len(ents))
	}
	if fi, err := os.Stat(d.Path()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	var got state
	undone, err := d.Recover(map[string]Handler{"tun": func(_ string, data json.RawMessage) error {
		return json.Unmarshal(data, &got)
	}})
	if err != nil || len(undone) != 1 || undone[0].String() != "tun corp" {
		t.Fatalf("Recover = %v, %v; want tun corp undone", undone, err)
	}
	if len(got.Routes) != 2 {
		t.Errorf("recovered %v, want the second record", got)
	}
	if err := d.Forget("lockdown", "corp"); err != nil {
		t.Fatal(err)
	}
	if err := d.Forget("lockdown", "corp"); err != nil {
		t.Errorf("second Forget: %v", err)
	}
	if ents, _ := os.ReadDir(d.Path()); len(ents) != 0 {
		t.Errorf("%d entries left after Recover and Forget", len(ents))
	}
}

func TestRecordRefusesPaths(t *testing.T) {
	d := NewDir(t.TempDir())
	for _, kind := range []string{"", "a.b", "a/b"} {
		if err := d.Record(kind, "corp", 1); err == nil {
			t.Errorf("Record(%q, corp) accepted", kind)
		}
	}
	for _, name := range []string{"", ".", "..", "../x", "a/b"} {
		if err := d.Record("tun", name, 1); err == nil {
			t.Errorf("Record(tun, %q) accepted", name)
		}
	}
	if err := d.Record("tun", "roam-a.b", 1); err != nil {
		t.Errorf("Record(tun, roam-a.b): %v", err)
	}
}

func TestZeroDir(t *testing.T) {
	var d Dir
	if err := d.Record("tun", "corp", 1); err != nil {
		t.Fatal(err)
	}
	if undone, err := d.Recover(nil); err != nil || undone != nil {
		t.Fatalf("Recover on the zero Dir = %v, %v", undone, err)
	}
}
