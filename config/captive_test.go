package config

import (
	"testing"
)

func TestCaptiveKeys(t *testing.T) {
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		name    string
		raw     rawCaptive
		want    Captive
		wantErr string
	}{
		{"default", rawCaptive{}, Captive{Probe: DefaultCaptiveProbe, Mode: CaptiveReport}, ""},
		{"step aside", rawCaptive{CaptivePortal: "step-aside"}, Captive{Probe: DefaultCaptiveProbe, Mode: CaptiveStepAside}, ""},
		{"own probe", rawCaptive{CaptiveProbe: str("http://192.0.2.1:8080/check")}, Captive{Probe: "http://192.0.2.1:8080/check", Mode: CaptiveReport}, ""},
		{"off", rawCaptive{CaptiveProbe: str("")}, Captive{Mode: CaptiveReport}, ""},
		{"step aside without probe", rawCaptive{CaptiveProbe: str(""), CaptivePortal: "step-aside"}, Captive{}, "needs a captive_probe"},
		{"bad mode", rawCaptive{CaptivePortal: "login"}, Captive{}, `captive_portal: "login" is not`},
		{"https", rawCaptive{CaptiveProbe: str("https://example.com/")}, Captive{}, "not a plain http:// URL"},
		{"no host", rawCaptive{CaptiveProbe: str("http:///x")}, Captive{}, "names no host"},
		{"not a URL", rawCaptive{CaptiveProbe: str("http://[::1")}, Captive{}, "is not a URL"},
		{"user", rawCaptive{CaptiveProbe: str("http://u:p@example.com/")}, Captive{}, "carries a user name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.raw.validate()
			if checkErr(t, err, tc.wantErr) {
				return
			}
			if got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
