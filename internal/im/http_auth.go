package im

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/hubuim/hubuim/internal/auth"
)

// Header and query names of the client HTTP API credentials.
const (
	headerMid = "X-Hubuim-Mid"
	queryMid  = "mid"
)

// VerifierAuth authenticates client HTTP requests with the same verifier as
// the long connection: the token comes from "Authorization: Bearer <token>",
// the claimed user id from the X-Hubuim-Mid header or the mid query
// parameter (optional with tokens that carry the user as their subject).
func VerifierAuth(v auth.Verifier) ClientAuth {
	return func(r *http.Request) (int64, error) {
		req := &auth.Request{RemoteAddr: r.RemoteAddr}
		if h := r.Header.Get("Authorization"); h != "" {
			tok, ok := strings.CutPrefix(h, "Bearer ")
			if !ok {
				return 0, ErrUnauthenticated
			}
			req.Token = tok
		}
		mid := r.Header.Get(headerMid)
		if mid == "" {
			mid = r.URL.Query().Get(queryMid)
		}
		if mid != "" {
			n, err := strconv.ParseInt(mid, 10, 64)
			if err != nil || n < 0 {
				return 0, ErrUnauthenticated
			}
			req.Mid = n
		}
		id, err := v.Verify(r.Context(), req)
		if err != nil || id.Mid <= 0 {
			return 0, ErrUnauthenticated
		}
		return id.Mid, nil
	}
}
