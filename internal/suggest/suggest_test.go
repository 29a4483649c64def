package suggest

import "testing"

func TestClosest(t *testing.T) {
	commands := []string{"connect", "disconnect", "status", "events", "check", "gateway", "version", "completion"}
	tests := []struct{ typed, want string }{
		{"conect", "connect"},
		{"conenct", "connect"}, // a transposition is one edit
		{"stauts", "status"},
		{"disconect", "disconnect"},
		{"chek", "check"},
		{"versoin", "version"},
		{"gatway", "gateway"},
		{"xyz", ""},
		{"launch", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := Closest(tt.typed, commands); got != tt.want {
			t.Errorf("Closest(%q) = %q, want %q", tt.typed, got, tt.want)
		}
	}
}

func TestDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"kitten", "sitting", 3}, {"ab", "ba", 1}, {"connect", "connect", 0},
	}
	for _, tt := range tests {
		if got := Distance(tt.a, tt.b); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}
