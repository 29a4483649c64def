package report

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode"

	"github.com/roam-vpn/roam/esp"
)

// TestDropsFromEveryReason: each esp.DropStats reason reaches the status
// object under its snake_case name with its own count, so a reason the
// dataplane adds cannot go missing from `roam status --json`.
func TestDropsFromEveryReason(t *testing.T) {
	var in esp.DropStats
	v := reflect.ValueOf(&in).Elem()
	want := map[string]uint64{}
	for i := 0; i < v.NumField(); i++ {
		v.Field(i).SetUint(uint64(100 + i)) // distinct, so a swapped mapping shows
		want[snakeCase(v.Type().Field(i).Name)] = uint64(100 + i)
	}
	b, err := json.Marshal(DropsFrom(in))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]uint64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("status drops %v\nwant %v", got, want)
	}
	nz := DropsFrom(esp.DropStats{SeqExhausted: 2, Malformed: 1}).Nonzero()
	if !reflect.DeepEqual(nz, []DropCount{{"malformed", 1}, {"seq_exhausted", 2}}) {
		t.Fatalf("nonzero %v", nz)
	}
}

// snakeCase spells a Go field name as a status key: BadICV -> bad_icv.
func snakeCase(s string) string {
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		if i > 0 && unicode.IsUpper(r) && (unicode.IsLower(rs[i-1]) || i+1 < len(rs) && unicode.IsLower(rs[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(r))
	}
	return b.String()
}
