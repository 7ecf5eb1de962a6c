package relay

import (
	"encoding/json"
	"testing"
)

// FuzzQuickAck: whenever the fast PubAck reader answers, encoding/json
// reads the same; parseAck always equals encoding/json. The seeds include
// every shape nats-server 2.9 sends and near misses.
func FuzzQuickAck(f *testing.F) {
	for _, s := range []string{
		`{"stream":"LEDGER", "seq":1}`,
		`{"stream":"LEDGER", "seq":18446744073709551615}`,
		`{"stream":"LEDGER", "domain":"hub", "seq":42}`,
		`{"stream":"LEDGER", "seq":7,"duplicate": true}`,
		`{"stream":"LEDGER","seq":7,"duplicate":true}`,
		`{"stream":"LEDGER","seq":7,"duplicate":false}`,
		`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"LEDGER","seq":0}`,
		`{"stream":"LE\"DGER", "seq":1}`,
		`{"stream":"LEDGER", "seq":1, "stream":"OTHER"}`,
		`{"stream":"LEDGER", "seq":-1}`,
		`{"stream":"LEDGER", "seq":1e3}`,
		`{"stream":"LEDGER", "seq":99999999999999999999}`,
		`{"stream":"LEDGER", "seq":1`,
		`{"stream":1, "seq":1}`,
		`{"x":"\"stream\":\"A\"", "seq":1}`,
		`{"stream":"A", "seq":1, "batch":"b","count":3}`,
		``, `{}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want pubAck
		jerr := json.Unmarshal(data, &want)
		if q, ok := quickAck(data); ok {
			if jerr != nil {
				t.Fatalf("quickAck read %q, encoding/json fails: %v", data, jerr)
			}
			if q.Stream != want.Stream || q.Seq != want.Seq || q.Duplicate != want.Duplicate || want.Error != nil {
				t.Fatalf("quickAck(%q) = %+v, encoding/json %+v", data, q, want)
			}
		}
		got, err := parseAck(data)
		if (err == nil) != (jerr == nil) || (err == nil && (got.Stream != want.Stream || got.Seq != want.Seq || got.Duplicate != want.Duplicate || (got.Error == nil) != (want.Error == nil))) {
			t.Fatalf("parseAck(%q) = %+v, %v; encoding/json %+v, %v", data, got, err, want, jerr)
		}
	})
}

// TestQuickAckTakesTheUsualShapes: the fast path is taken for what JetStream
// answers a stored or duplicate message.
func TestQuickAckTakesTheUsualShapes(t *testing.T) {
	for _, s := range []string{`{"stream":"LEDGER", "seq":1}`, `{"stream":"LEDGER", "domain":"hub", "seq":42}`, `{"stream":"LEDGER", "seq":7,"duplicate": true}`} {
		if _, ok := quickAck([]byte(s)); !ok {
			t.Errorf("quickAck(%s) not taken", s)
		}
	}
}
