package domain

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

var envelopeSeeds = []string{
	clerkUserBody,
	`{"data":{"id":"sess_1","object":"session","user_id":"user_1","status":"active"},"object":"event","timestamp":1716883200000,"type":"session.created","instance_id":"ins_1"}`,
	`{"data":{"id":"orgmem_1","object":"organization_membership","public_user_data":{"user_id":"user_2","first_name":"A"},"organization":{"id":"org_1"}},"type":"organizationMembership.created","timestamp":1}`,
	`{"data":{"id":"sub_1","payer":{"user_id":"user_3","email":"a@b"}},"type":"subscription.created","timestamp":1}`,
	`{"data":{"id":"user_4","object":"user"},"type":"email.created","timestamp":1716883200}`,
	`{"data":{"public_user_data":null,"payer":null},"type":"x"}`,
	`{"data":{"id":"sess_1","user_id":"user_1","public_user_data":"n/a"},"type":"session.created"}`,
	`{"data":{"id":"user_1","object":"user","user_id":5,"payer":[1]},"type":"user.updated"}`,
	`{"data":{"public_user_data":{"User_ID":"u"}},"type":"x"}`,
	`{"data":{"public_user_data":{"user_id":"u","user_id":"v"}},"type":"x"}`,
	`{"data":{"user_id":7},"type":"x"}`,
	`{"data":{"ID":"user_1"},"type":"user.created"}`,
	`{"Type":"user.created","data":{"id":"user_1"}}`,
	`{"type":"user.created","type":"user.updated","data":{}}`,
	`{"type":"us\u0065r.created","data":{"id":"user_1"}}`,
	`{"type":"user.created","data":{"id":"user_\u0031"}}`,
	`{"type":"user.created","data":[]}`,
	`{"type":"user.created","data":null}`,
	`{"type":"user.created","data":"x"}`,
	`{"type":"user.created","timestamp":null,"data":{}}`,
	`{"type":"user.created","timestamp":1.5,"data":{}}`,
	`{"type":"user.created","timestamp":"1","data":{}}`,
	`{"type":7,"data":{}}`,
	`{"type":"user.created","data": { "id" : "user_1" } , "object":"event"} `,
	`{"type":"user.created","data":{"id":"user_1"}} x`,
	`{"type":"user.created","data":{"id":"user_1",}}`,
	`{"type":"é","data":{"id":"Zoë"},"instance_id":"\ud800"}`,
	"{\"type\":\"user.created\",\"data\":{\"id\":\"user_\xff\"}}",
	`[]`,
	``,
	`{"data":{"id":"user_1","x":[1,2,{"a":[true,false,null,-1.2e-3,"\n"]}]},"type":"user.updated"}`,
}

// TestScanEnvelopeAgreesWithEncodingJSON checks the seeds; the fuzz target
// below explores further.
func TestScanEnvelopeAgreesWithEncodingJSON(t *testing.T) {
	fast := 0
	for _, s := range envelopeSeeds {
		if checkEnvelope(t, []byte(s)) {
			fast++
		}
	}
	// The realistic bodies must take the fast path, or it is pointless.
	for _, s := range envelopeSeeds[:5] {
		if _, _, ok := scanEnvelope([]byte(s)); !ok {
			t.Errorf("fast path refused a plain Clerk body: %s", s[:60])
		}
	}
	t.Logf("%d of %d seeds took the fast path", fast, len(envelopeSeeds))
}

func FuzzDecodeEnvelope(f *testing.F) {
	for _, s := range envelopeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkEnvelope(t, b) })
}

// checkEnvelope fails t when decodeEnvelope's answer for b (fast path or
// not) differs from json.Unmarshal's into Envelope and then of its data
// into subjectData, and reports whether the fast path answered.
func checkEnvelope(t *testing.T, b []byte) bool {
	t.Helper()
	var want Envelope
	wantErr := json.Unmarshal(b, &want)
	var wantSubj subjectData
	wantSubjOK := false
	if wantErr == nil {
		// encoding/json, a field of another type skipped (decodeSubject).
		err := json.Unmarshal(want.Data, &wantSubj)
		var typeErr *json.UnmarshalTypeError
		wantSubjOK = err == nil || errors.As(err, &typeErr)
		if !wantSubjOK {
			wantSubj = subjectData{}
		}
	}
	same := func(env Envelope, subj subjectData, subjOK bool) bool {
		return env.Type == want.Type && env.Object == want.Object && env.Timestamp == want.Timestamp &&
			env.InstanceID == want.InstanceID && bytes.Equal(env.Data, want.Data) &&
			subjOK == wantSubjOK && (!subjOK || subj == wantSubj)
	}
	env, subj, ok := scanEnvelope(b)
	if ok {
		if wantErr != nil {
			t.Fatalf("fast path accepted what encoding/json rejects (%v): %q", wantErr, b)
		}
		if !same(env, subj, true) {
			t.Fatalf("fast path decoded %q\n got  %+v %+v\n want %+v %+v (%v)", b, env, subj, want, wantSubj, wantSubjOK)
		}
	}
	env, subj, subjOK, err := decodeEnvelope(b)
	if (err != nil) != (wantErr != nil) || (err == nil && !same(env, subj, subjOK)) {
		t.Fatalf("decodeEnvelope(%q) = %+v %+v %v, %v; want %+v %+v %v, %v", b, env, subj, subjOK, err, want, wantSubj, wantSubjOK, wantErr)
	}
	return ok
}

func BenchmarkDecodeEnvelope(b *testing.B) {
	body := []byte(clerkUserBody)
	b.Run("encoding_json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var env Envelope
			if err := json.Unmarshal(body, &env); err != nil {
				b.Fatal(err)
			}
			var d subjectData
			if err := json.Unmarshal(env.Data, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("scanner", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, _, _, err := decodeEnvelope(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
