package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// httpTimeout bounds one API call.
const httpTimeout = 10 * time.Second

// maxReply bounds how much of an API reply is read.
const maxReply = 8 << 20

func insecureTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // opt-in flag for development certificates
}

// apiFlags are the flags of every command that calls logic over HTTP.
type apiFlags struct {
	logic  string
	secret string
	mid    int64
	token  string
}

func (a *apiFlags) register(fs *flag.FlagSet, asUser bool) {
	fs.StringVar(&a.logic, "logic", defaultLogic, "logic HTTP base URL")
	fs.StringVar(&a.secret, "secret", "", "push API bearer secret (empty: none, as in standalone mode)")
	if asUser {
		fs.Int64Var(&a.mid, "mid", 1, "acting user id")
		fs.StringVar(&a.token, "token", "", "the user's token (standalone mode trusts -mid without one)")
	}
}

// envelope is goim's JSON reply.
type envelope struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

func (a *apiFlags) call(ctx context.Context, method, path string, query url.Values, body []byte, user bool) (json.RawMessage, error) {
	u := strings.TrimRight(a.logic, "/") + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	switch {
	case user:
		req.Header.Set("X-Hubuim-Mid", strconv.FormatInt(a.mid, 10))
		if a.token != "" {
			req.Header.Set("Authorization", "Bearer "+a.token)
		}
	case a.secret != "":
		req.Header.Set("Authorization", "Bearer "+a.secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return nil, err
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if env.Code != 0 || resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: HTTP %d code %d: %s", method, path, resp.StatusCode, env.Code, env.Message)
	}
	return env.Data, nil
}

func printJSON(out io.Writer, data json.RawMessage) {
	if len(data) == 0 || string(data) == "null" {
		fmt.Fprintln(out, "ok")
		return
	}
	var buf bytes.Buffer
	if json.Indent(&buf, data, "", "  ") != nil {
		out.Write(data)
		fmt.Fprintln(out)
		return
	}
	buf.WriteByte('\n')
	buf.WriteTo(out)
}

func cmdPush(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("push: keys|mids|room|all (imctl push keys -op 1000 -keys k1,k2 hello)")
	}
	kind, args := args[0], args[1:]
	fs := flag.NewFlagSet("push "+kind, flag.ContinueOnError)
	var a apiFlags
	a.register(fs, false)
	op := fs.Int("op", 1000, "business operation (>= 1000)")
	keys := fs.String("keys", "", "device keys, comma-separated (push keys)")
	mids := fs.String("mids", "", "user ids, comma-separated (push mids)")
	room := fs.String("room", "", "room, type://id or just the id with -type (push room)")
	typ := fs.String("type", "live", "room type (push room)")
	speed := fs.Int("speed", 0, "connections per second (push all; 0: unlimited)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	msg := []byte(strings.Join(fs.Args(), " "))
	q := url.Values{"operation": {strconv.Itoa(*op)}}
	var path string
	switch kind {
	case "keys":
		path = "/goim/push/keys"
		q.Set("keys", *keys)
	case "mids":
		path = "/goim/push/mids"
		q.Set("mids", *mids)
	case "room":
		path = "/goim/push/room"
		t, id := *typ, *room
		if before, after, ok := strings.Cut(*room, "://"); ok {
			t, id = before, after
		}
		q.Set("type", t)
		q.Set("room", id)
	case "all":
		path = "/goim/push/all"
		q.Set("speed", strconv.Itoa(*speed))
	default:
		return fmt.Errorf("push: unknown target %q (keys, mids, room, all)", kind)
	}
	data, err := a.call(ctx, http.MethodPost, path, q, msg, false)
	if err != nil {
		return err
	}
	printJSON(out, data)
	return nil
}

func cmdOnline(ctx context.Context, args []string, out io.Writer) error {
	kind := "total"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		kind, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("online "+kind, flag.ContinueOnError)
	var a apiFlags
	a.register(fs, false)
	typ := fs.String("type", "live", "room type")
	rooms := fs.String("rooms", "", "room ids, comma-separated (online room)")
	limit := fs.Int("limit", 10, "how many rooms (online top)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	q := url.Values{}
	switch kind {
	case "total":
	case "room":
		q.Set("type", *typ)
		q.Set("rooms", *rooms)
	case "top":
		q.Set("type", *typ)
		q.Set("limit", strconv.Itoa(*limit))
	default:
		return fmt.Errorf("online: unknown view %q (total, room, top)", kind)
	}
	data, err := a.call(ctx, http.MethodGet, "/goim/online/"+kind, q, nil, false)
	if err != nil {
		return err
	}
	printJSON(out, data)
	return nil
}

func cmdNodes(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("nodes", flag.ContinueOnError)
	var a apiFlags
	a.register(fs, false)
	region := fs.String("region", "", "client region")
	all := fs.Bool("instances", false, "list every registered comet instead of the weighted list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	path, q := "/goim/nodes/weighted", url.Values{}
	if *region != "" {
		q.Set("region", *region)
	}
	if *all {
		path = "/goim/nodes/instances"
	}
	data, err := a.call(ctx, http.MethodGet, path, q, nil, false)
	if err != nil {
		return err
	}
	printJSON(out, data)
	return nil
}

func cmdGroup(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("group: create|add|remove|members|list")
	}
	kind, args := args[0], args[1:]
	fs := flag.NewFlagSet("group "+kind, flag.ContinueOnError)
	var a apiFlags
	a.register(fs, true)
	gid := fs.Int64("group", 0, "group id")
	name := fs.String("name", "", "group name (create)")
	users := fs.String("users", "", "user ids, comma-separated (create, add, remove)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ids, err := parseIDs(*users)
	if err != nil {
		return err
	}
	groupPath := "/im/v1/groups/" + strconv.FormatInt(*gid, 10) + "/members"
	var data json.RawMessage
	switch kind {
	case "create":
		body, _ := json.Marshal(map[string]any{"name": *name, "members": ids})
		data, err = a.call(ctx, http.MethodPost, "/im/v1/groups", nil, body, true)
	case "list":
		data, err = a.call(ctx, http.MethodGet, "/im/v1/groups", nil, nil, true)
	case "members":
		data, err = a.call(ctx, http.MethodGet, groupPath, nil, nil, true)
	case "add":
		body, _ := json.Marshal(map[string]any{"users": ids})
		data, err = a.call(ctx, http.MethodPost, groupPath, nil, body, true)
	case "remove":
		for _, u := range ids {
			if data, err = a.call(ctx, http.MethodDelete, groupPath+"/"+strconv.FormatInt(u, 10), nil, nil, true); err != nil {
				break
			}
		}
	default:
		return fmt.Errorf("group: unknown command %q", kind)
	}
	if err != nil {
		return err
	}
	printJSON(out, data)
	return nil
}

func parseIDs(s string) ([]int64, error) {
	var ids []int64
	for _, p := range splitList(s) {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a user id", p)
		}
		ids = append(ids, n)
	}
	return ids, nil
}
