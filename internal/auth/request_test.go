package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	opList := func(n int) []int32 {
		ops := make([]int32, n)
		for i := range ops {
			ops[i] = int32(1000 + i)
		}
		return ops
	}
	accepts := func(n int) string {
		data, _ := json.Marshal(opList(n))
		return string(data)
	}
	tests := []struct {
		name string
		body string
		want *Request // nil: expect ErrBadRequest
	}{
		{"full", `{"mid":42,"key":"dev-1","room_id":"live://1000","platform":"ios","accepts":[1000,1001],"token":"t.o.k"}`,
			&Request{Mid: 42, Key: "dev-1", RoomID: "live://1000", Platform: "ios", Accepts: []int32{1000, 1001}, Token: "t.o.k"}},
		{"empty object", `{}`, &Request{}},
		{"leading space", " \n{\"mid\":1}", &Request{Mid: 1}},
		{"unknown fields ignored (goim compat)", `{"mid":7,"extra":{"a":[1,2]}}`, &Request{Mid: 7}},
		{"max int64 mid", `{"mid":9223372036854775807}`, &Request{Mid: 1<<63 - 1}},
		{"fields at their limits", fmt.Sprintf(`{"key":%q,"room_id":%q,"platform":%q,"token":%q,"accepts":%s}`,
			long(MaxKeyLen), long(MaxRoomIDLen), long(MaxPlatformLen), long(MaxTokenLen), accepts(MaxAccepts)),
			&Request{Key: long(MaxKeyLen), RoomID: long(MaxRoomIDLen), Platform: long(MaxPlatformLen), Token: long(MaxTokenLen), Accepts: opList(MaxAccepts)}},

		{"empty body", ``, nil},
		{"null", `null`, nil},
		{"array", `[1,2]`, nil},
		{"truncated", `{"mid":1`, nil},
		{"trailing garbage", `{"mid":1} x`, nil},
		{"negative mid", `{"mid":-1}`, nil},
		{"float mid", `{"mid":1.5}`, nil},
		{"string mid", `{"mid":"1"}`, nil},
		{"mid overflow", `{"mid":9223372036854775808}`, nil},
		{"key too long", fmt.Sprintf(`{"key":%q}`, long(MaxKeyLen+1)), nil},
		{"room too long", fmt.Sprintf(`{"room_id":%q}`, long(MaxRoomIDLen+1)), nil},
		{"platform too long", fmt.Sprintf(`{"platform":%q}`, long(MaxPlatformLen+1)), nil},
		{"token too long", fmt.Sprintf(`{"token":%q}`, long(MaxTokenLen+1)), nil},
		{"too many accepts", `{"accepts":` + accepts(MaxAccepts+1) + `}`, nil},
		{"negative op", `{"accepts":[1000,-3]}`, nil},
		{"op overflows int32", `{"accepts":[4294967296]}`, nil},
		{"body too large", `{"key":"` + long(MaxRequestBytes) + `"}`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRequest([]byte(tc.body))
			if tc.want == nil {
				if !errors.Is(err, ErrBadRequest) {
					t.Fatalf("err = %v, want ErrBadRequest", err)
				}
				if got != nil {
					t.Fatalf("got %+v with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRequest: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseRequestErrorsHideInput(t *testing.T) {
	const secret = "SECRET-TOKEN-TEXT"
	for _, body := range []string{
		`{"token":"` + secret + `",}`,
		`{"token":"` + secret + `","mid":-5}`,
		`{"mid":` + "1234567890123456789012345" + `,"token":"` + secret + `"}`,
		`{"token":["` + secret + `"]}`,
		`{"key":"` + secret + strings.Repeat("x", MaxKeyLen) + `"}`,
	} {
		_, err := ParseRequest([]byte(body))
		if err == nil {
			t.Fatalf("%s: no error", body)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "1234567890") {
			t.Fatalf("error quotes the input: %v", err)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"mid":42,"key":"dev-1","room_id":"live://1000","platform":"ios","accepts":[1000,1001],"token":"a.b.c"}`,
		`{}`, `null`, `{"mid":-1}`, `{"accepts":[1,2,3]}`, `{"mid":1e3}`, `{"key":"\u0000"}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := ParseRequest(body)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if req.Mid < 0 || len(req.Key) > MaxKeyLen || len(req.RoomID) > MaxRoomIDLen ||
			len(req.Platform) > MaxPlatformLen || len(req.Token) > MaxTokenLen || len(req.Accepts) > MaxAccepts {
			t.Fatalf("accepted out-of-bounds request %+v", req)
		}
		// A parsed request re-encodes to JSON that decodes to the same
		// request and still validates. (Not through ParseRequest: escaping
		// may push the re-encoded body past MaxRequestBytes.)
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		req2 := new(Request)
		if err := json.Unmarshal(again, req2); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if err := req2.validate(); err != nil {
			t.Fatalf("re-validate: %v", err)
		}
		if !reflect.DeepEqual(req, req2) {
			t.Fatalf("round trip: %+v != %+v", req, req2)
		}
	})
}

func BenchmarkParseRequest(b *testing.B) {
	body := []byte(`{"mid":42,"key":"3f1c6a1e-8d4b-4c7e-9a0f-2b5d7e9c1a34","room_id":"live://1000","platform":"ios","accepts":[1000,1001,1002],"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequest(body); err != nil {
			b.Fatal(err)
		}
	}
}
