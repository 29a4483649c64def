package daemon

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadRequestPassedFiles: the request line arrives with the
// descriptors sent beside it, whole however it is split.
func TestReadRequestPassedFiles(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string // written one sendmsg each; the first carries the files
		files  int
		want   string
	}{
		{name: "no files", chunks: []string{"{\"op\":\"status\"}\n"}, want: "{\"op\":\"status\"}\n"},
		{name: "two files", chunks: []string{"{\"op\":\"connect\"}\n"}, files: 2, want: "{\"op\":\"connect\"}\n"},
		{name: "split line", chunks: []string{"{\"op\":", "\"connect\"}\n"}, files: 1, want: "{\"op\":\"connect\"}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s")
			ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			cl, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			srv, err := ln.AcceptUnix()
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			var fds []int
			for range tt.files {
				f, err := os.CreateTemp(t.TempDir(), "f")
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				fds = append(fds, int(f.Fd()))
			}
			for i, c := range tt.chunks {
				var oob []byte
				if i == 0 && len(fds) > 0 {
					oob = unix.UnixRights(fds...)
				}
				if _, _, err := cl.WriteMsgUnix([]byte(c), oob, nil); err != nil {
					t.Fatal(err)
				}
			}
			line, files, err := readRequest(srv)
			defer closeFiles(files)
			if err != nil {
				t.Fatal(err)
			}
			if string(line) != tt.want || len(files) != tt.files {
				t.Fatalf("read %q with %d files, want %q with %d", line, len(files), tt.want, tt.files)
			}
			for _, f := range files {
				if flags, err := unix.FcntlInt(f.Fd(), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
					t.Fatalf("passed descriptor not close-on-exec (%v)", err)
				}
			}
		})
	}
}
