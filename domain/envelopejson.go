package domain

import (
	"encoding/json"
	"errors"
)

// decodeEnvelope decodes a webhook body into its Envelope and the fields
// naming its subject user, exactly as json.Unmarshal into Envelope, then of
// its Data into subjectData (decodeSubject), would: same results, and err
// exactly when the first json.Unmarshal fails (subjectOK false when the
// second does).
//
// Most bodies take a single pass of the scanner (see decodeUserEnvelope),
// which validates the whole document, keeps Data as a slice of body (it is
// the same bytes) and reads only the subject's fields. Anything it is not
// sure to decode identically goes to encoding/json, which then defines the
// result. FuzzDecodeEnvelope checks the two agree.
func decodeEnvelope(body []byte) (env Envelope, subj subjectData, subjectOK bool, err error) {
	if env, subj, ok := scanEnvelope(body); ok {
		return env, subj, true, nil
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return env, subjectData{}, false, err
	}
	subj, subjectOK = decodeSubject(env.Data)
	return env, subj, subjectOK, nil
}

// decodeSubject decodes data into subjectData as json.Unmarshal does,
// except that a field of another JSON type than subjectData's (a
// "public_user_data" string beside a session's "user_id", say) is left
// empty rather than losing every other field: ok is false only when data
// does not decode at all. The subject is what the event's user is sealed
// under; one odd field must not leave a body about a user in clear.
func decodeSubject(data []byte) (d subjectData, ok bool) {
	err := json.Unmarshal(data, &d)
	if err == nil {
		return d, true
	}
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		// encoding/json skips the field and decodes the rest.
		return d, true
	}
	return subjectData{}, false
}

// scanEnvelope is the fast path of decodeEnvelope; ok is false when it could
// not be sure (no data, or data that is not an object, included).
func scanEnvelope(b []byte) (env Envelope, subj subjectData, ok bool) {
	s := &scanner{b: b}
	var seen uint64
	sure := s.document(func(key []byte) {
		switch string(key) {
		case "type":
			s.once(&seen, 0)
			env.Type = s.stringValue()
		case "object":
			s.once(&seen, 1)
			env.Object = s.stringValue()
		case "timestamp":
			s.once(&seen, 2)
			env.Timestamp = s.int64Value()
		case "instance_id":
			s.once(&seen, 3)
			env.InstanceID = s.stringValue()
		case "data":
			s.once(&seen, 4)
			start := s.i
			s.subjectData(&subj)
			env.Data = b[start:s.i:s.i]
		default:
			s.foldCheck(key, "type", "object", "timestamp", "instance_id", "data")
			s.skip(1)
		}
	})
	// Without data, encoding/json decides (ParseEnvelope refuses it).
	if !sure || seen&(1<<4) == 0 {
		return Envelope{}, subjectData{}, false
	}
	return env, subj, true
}

// subjectData scans the envelope's data object into d.
func (s *scanner) subjectData(d *subjectData) {
	var seen uint64
	s.object(1, func(key []byte) {
		switch string(key) {
		case "id":
			s.once(&seen, 0)
			d.ID = s.stringValue()
		case "object":
			s.once(&seen, 1)
			d.Object = s.stringValue()
		case "user_id":
			s.once(&seen, 2)
			d.UserID = s.stringValue()
		case "public_user_data":
			s.once(&seen, 3)
			d.PublicUserData.UserID = s.userIDObject()
		case "payer":
			s.once(&seen, 4)
			d.Payer.UserID = s.userIDObject()
		default:
			s.foldCheck(key, "id", "object", "user_id", "public_user_data", "payer")
			s.skip(2)
		}
	})
}

// userIDObject scans an object of which only "user_id" is kept.
func (s *scanner) userIDObject() (id string) {
	var seen uint64
	s.object(2, func(key []byte) {
		if string(key) == "user_id" {
			s.once(&seen, 0)
			id = s.stringValue()
			return
		}
		s.foldCheck(key, "user_id")
		s.skip(3)
	})
	return id
}
