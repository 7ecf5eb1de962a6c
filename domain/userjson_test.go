package domain

import (
	"encoding/json"
	"reflect"
	"testing"
)

// clerkUserBody is a user.updated delivery as Clerk sends it.
const clerkUserBody = `{"data":{"backup_code_enabled":false,"banned":false,"create_organization_enabled":true,"created_at":1654012591514,"delete_self_enabled":true,"email_addresses":[{"email_address":"old@example.org","id":"idn_1","linked_to":[],"object":"email_address","verification":{"status":"verified","strategy":"ticket"}},{"email_address":"grace@example.org","id":"idn_29w83yL7CwVlJXylYLxcslromF1","linked_to":[],"object":"email_address","reserved":true,"verification":{"attempts":null,"expire_at":null,"status":"verified","strategy":"admin"}}],"external_accounts":[],"external_id":null,"first_name":"Grace","has_image":true,"id":"user_29w83sxmDNGwOuEthce5gg56FcC","image_url":"https://img.clerk.com/xxxxxx","last_active_at":1654012591514,"last_name":"Hopper","last_sign_in_at":null,"locked":false,"lockout_expires_in_seconds":null,"mfa_disabled_at":null,"mfa_enabled_at":null,"object":"user","passkeys":[],"password_enabled":true,"phone_numbers":[],"primary_email_address_id":"idn_29w83yL7CwVlJXylYLxcslromF1","primary_phone_number_id":null,"primary_web3_wallet_id":null,"private_metadata":{},"profile_image_url":"https://www.gravatar.com/avatar?d=mp","public_metadata":{"plan":"pro","n":1.5e3,"tags":["a","b"],"x":null},"saml_accounts":[],"totp_enabled":false,"two_factor_enabled":false,"unsafe_metadata":{},"updated_at":1654012824306,"username":null,"verification_attempts_remaining":100,"web3_wallets":[]},"event_attributes":{"http_request":{"client_ip":"0.0.0.0","user_agent":"Mozilla/5.0"}},"instance_id":"ins_123","object":"event","timestamp":1654012824306,"type":"user.updated"}`

// completeUserSeed has every field of a complete user (issue 16).
const completeUserSeed = `{"data":{"id":"user_1","primary_email_address_id":"e","email_addresses":[{"id":"e","email_address":"a@b","verification":{"status":"verified","strategy":"email_code"}}],"primary_phone_number_id":"idn_p","phone_numbers":[{"id":"idn_q","phone_number":"+1"},{"id":"idn_p","phone_number":"+4915","verification":null}],"external_id":"ext-7","banned":true,"locked":false,"two_factor_enabled":true,"last_sign_in_at":1700000000000,"last_active_at":null,"private_metadata":{"stripe":"cus_1","n":[1,{"a":null}]}},"timestamp":1}`

var userEnvelopeSeeds = []string{
	clerkUserBody,
	`{"data":{"deleted":true,"id":"user_29wBMCtzATuFJut8jO2VNTVekS4","object":"user"},"object":"event","timestamp":1661861640000,"type":"user.deleted"}`,
	`{"data":{"id":"user_1","primary_email_address_id":null,"email_addresses":[],"first_name":null,"phone_numbers":[{"id":"idn_p"}]},"timestamp":1}`,
	`{"data":{"id":"us\u0065r_1"},"timestamp":1}`,
	`{"data":{"ID":"user_1"},"timestamp":1}`,
	`{"data":{"id":"user_1","id":"user_2"},"timestamp":1}`,
	`{"data":{"id":"user_1"},"data":{"first_name":"A"}}`,
	`{"data":{"id":"user_1","public_metadata":null,"updated_at":-0}}`,
	`{"data":{"id":"user_1","created_at":1.5}}`,
	`{"data":{"id":"user_1","created_at":"1"}}`,
	`{"data":{"id":"user_1","created_at":99999999999999999999}}`,
	`{"data":null,"timestamp":null}`,
	`{"data":{"id":"é\u00e9","first_name":"Zoë"}}`,
	"{\"data\":{\"id\":\"user_\xff\"}}",
	`{"data":{"id":"user_1","email_addresses":[{"id":"a","email_address":"x@y","ID":"b"}]}}`,
	`{"data":{"id":"user_1","email_addresses":null}}`,
	`{"data":{"id":"user_1","deleted":null}}`,
	`{"data":{"id":"user_1"}} x`,
	`{"data":{"id":"user_1",}}`,
	`{"data":{"id":"user_1","x":[1,2,{"a":[true,false,null,-1.2e-3,"\n"]}]}}`,
	`{"data":{"id":"user_1","x":"bad\u12"}}`,
	`{"data":{"id":"user_1","x":01}}`,
	`{"data":{"id":"user_1","x":"tab	in string"}}`,
	`[]`,
	` {"timestamp" : 5 , "data" : { "id" : "u" } } `,
	`{"ſtamp":1,"timeſtamp":2,"data":{"id":"u","K":1}}`,
	// The fields of a complete user (issue 16): phone, flags, times, private metadata.
	completeUserSeed,
	`{"data":{"id":"user_1","primary_email_address_id":"e","email_addresses":[{"id":"e","email_address":"a@b","verification":null}]}}`,
	`{"data":{"id":"user_1","email_addresses":[{"id":"e","verification":{"status":7}}]}}`,
	`{"data":{"id":"user_1","email_addresses":[{"id":"e","verification":{"Status":"verified"}}]}}`,
	`{"data":{"id":"user_1","email_addresses":[{"id":"e","verification":{"status":"verified"},"verification":{"status":"unverified"}}]}}`,
	`{"data":{"id":"user_1","email_addresses":[{"id":"e","verification":[]}]}}`,
	`{"data":{"id":"user_1","phone_numbers":null,"banned":null}}`,
	`{"data":{"id":"user_1","phone_numbers":[{"id":"p","Phone_Number":"+1"}]}}`,
	`{"data":{"id":"user_1","Banned":true,"LOCKED":true}}`,
	`{"data":{"id":"user_1","last_sign_in_at":1.5,"last_active_at":"1"}}`,
	`{"data":{"id":"user_1","private_metadata":null,"external_id":null}}`,
	`{"data":{"id":"user_1","private_metadata":{"k\u0000":"\ud800"},"external_id":"e\u0000"}}`,
	// What PostgreSQL refuses (the fold keeps it in storable form, see StorableJSON).
	`{"data":{"id":"user_1","first_name":"a\u0000","username":"\ud800","public_metadata":{"k\u0000":"\udc00","x":"\\u0000"}}}`,
	`{"data":{"id":"user_\u0000","public_metadata":{"n":1e1000000}}}`,
}

// TestScanUserEnvelopeAgreesWithEncodingJSON checks the seeds; the fuzz
// target below explores further.
func TestScanUserEnvelopeAgreesWithEncodingJSON(t *testing.T) {
	fast := 0
	for _, s := range userEnvelopeSeeds {
		if checkUserEnvelope(t, []byte(s)) {
			fast++
		}
	}
	// The realistic bodies must take the fast path, or it is pointless.
	for _, s := range append(userEnvelopeSeeds[:3:3], completeUserSeed) {
		if _, ok := scanUserEnvelope([]byte(s)); !ok {
			t.Errorf("fast path refused a plain Clerk body: %s", s[:60])
		}
	}
	t.Logf("%d of %d seeds took the fast path", fast, len(userEnvelopeSeeds))
}

func FuzzDecodeUserEnvelope(f *testing.F) {
	for _, s := range userEnvelopeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkUserEnvelope(t, b) })
}

// checkUserEnvelope fails t when the fast path's answer for b differs from
// json.Unmarshal's, and reports whether the fast path answered.
func checkUserEnvelope(t *testing.T, b []byte) bool {
	t.Helper()
	var want userEnvelope
	wantErr := json.Unmarshal(b, &want)
	got, ok := scanUserEnvelope(b)
	if ok {
		if wantErr != nil {
			t.Fatalf("fast path accepted what encoding/json rejects (%v): %q", wantErr, b)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("fast path decoded %q\n got  %+v\n want %+v", b, got, want)
		}
	}
	got2, err := decodeUserEnvelope(b)
	if (err != nil) != (wantErr != nil) || (err == nil && !reflect.DeepEqual(got2, want)) {
		t.Fatalf("decodeUserEnvelope(%q) = %+v, %v; want %+v, %v", b, got2, err, want, wantErr)
	}
	return ok
}

func BenchmarkDecodeUserEnvelope(b *testing.B) {
	body := []byte(clerkUserBody)
	b.Run("encoding_json", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var env userEnvelope
			if err := json.Unmarshal(body, &env); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("scanner", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := decodeUserEnvelope(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
