package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/pkg/client"
)

// deviceFlags are the flags of every command that connects as a device.
type deviceFlags struct {
	comet     string
	transport string
	nodes     string
	mid       int64
	key       string
	token     string
	platform  string
	room      string
	accepts   string
	insecure  bool
}

func (d *deviceFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&d.comet, "comet", defaultComet, "comet address, host:port or scheme://host:port (tcp, tls, ws, wss)")
	fs.StringVar(&d.transport, "transport", client.TransportTCP, "tcp, tls, ws or wss for host:port addresses")
	fs.StringVar(&d.nodes, "nodes", "", "logic node list URL (e.g. http://127.0.0.1:3111/goim/nodes/weighted); tried before -comet")
	fs.Int64Var(&d.mid, "mid", 1, "user id")
	fs.StringVar(&d.key, "key", "", "device key (empty: the server assigns one)")
	fs.StringVar(&d.token, "token", "", "auth token (standalone mode trusts -mid without one)")
	fs.StringVar(&d.platform, "platform", "cli", "platform sent in Auth")
	fs.StringVar(&d.room, "room", "", "room to join, type://id")
	fs.StringVar(&d.accepts, "accepts", "", "business ops to accept, comma-separated (e.g. 1000,1001)")
	fs.BoolVar(&d.insecure, "insecure-tls", false, "skip TLS certificate verification (self-signed development certs)")
}

func (d *deviceFlags) connect(ctx context.Context) (*client.Client, error) {
	cfg := client.Config{
		Addrs:       []string{d.comet},
		NodeListURL: d.nodes,
		Transport:   d.transport,
		Mid:         d.mid,
		Key:         d.key,
		Token:       d.token,
		Platform:    d.platform,
		RoomID:      d.room,
		SendTimeout: 3 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	for _, s := range splitList(d.accepts) {
		op, err := strconv.ParseInt(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("-accepts: %q is not an op number", s)
		}
		cfg.Accepts = append(cfg.Accepts, int32(op))
	}
	if d.insecure {
		cfg.TLS = insecureTLS()
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	dialCtx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := c.Connect(dialCtx); err != nil {
		return nil, fmt.Errorf("connect to %s: %w", d.comet, err)
	}
	return c, nil
}

func cmdListen(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	var d deviceFlags
	d.register(fs)
	count := fs.Int("n", 0, "exit after this many messages and pushes (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := d.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	seen := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-c.Events():
			if !ok {
				return c.Err() // a kick that ended it: exit non-zero
			}
			if printEvent(out, ev) {
				seen++
				if *count > 0 && seen >= *count {
					return nil
				}
			}
		}
	}
}

// printEvent prints one event and reports whether it was a message or push.
func printEvent(out io.Writer, ev client.Event) bool {
	ts := time.Now().Format("15:04:05.000")
	switch e := ev.(type) {
	case client.Connected:
		fmt.Fprintf(out, "%s connected mid=%d key=%s\n", ts, e.Mid, e.Key)
	case client.Disconnected:
		fmt.Fprintf(out, "%s disconnected: %v\n", ts, e.Err)
	case client.Kicked:
		fmt.Fprintf(out, "%s kicked: %v\n", ts, e.Reason)
	case client.Message:
		m := e.Msg
		fmt.Fprintf(out, "%s message conv=%s seq=%d from=%d: %s\n", ts, m.ConvId, m.Seq, m.Sender, m.Payload)
		return true
	case client.Push:
		fmt.Fprintf(out, "%s push op=%d: %s\n", ts, e.Op, e.Body)
		return true
	case client.Notify:
		fmt.Fprintf(out, "%s notify %v\n", ts, e)
	case client.ReadMark:
		fmt.Fprintf(out, "%s read mark %v\n", ts, e)
	case client.Presence:
		fmt.Fprintf(out, "%s presence %v\n", ts, e)
	case client.Error:
		fmt.Fprintf(out, "%s error: %v\n", ts, e.Err)
	default:
		fmt.Fprintf(out, "%s %T %v\n", ts, ev, ev)
	}
	return false
}

func cmdSend(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	var d deviceFlags
	d.register(fs)
	to := fs.Int64("to", 0, "peer user id")
	group := fs.Int64("group", 0, "group id (instead of -to)")
	count := fs.Int("n", 1, "send the text this many times (numbered when > 1)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	conv, err := conversation(*to, *group)
	if err != nil {
		return err
	}
	text := strings.Join(fs.Args(), " ")
	if text == "" {
		return fmt.Errorf("send: the message text is missing (imctl send -to 2 hello)")
	}
	c, err := d.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	go drain(c)
	for i := 1; i <= *count; i++ {
		body := text
		if *count > 1 {
			body = fmt.Sprintf("%s #%d", text, i)
		}
		start := time.Now()
		ack, err := c.Send(ctx, conv, 0, []byte(body))
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		fmt.Fprintf(out, "ack conv=%s seq=%d msg_id=%d in %v\n", ack.ConvId, ack.Seq, ack.MsgId, time.Since(start).Round(time.Microsecond))
	}
	return nil
}

func conversation(to, group int64) (client.Conversation, error) {
	switch {
	case to > 0 && group == 0:
		return client.User(to), nil
	case group > 0 && to == 0:
		return client.Group(group), nil
	}
	return client.Conversation{}, fmt.Errorf("give exactly one of -to USER or -group GROUP")
}

// drain discards events so the SDK's reader never blocks.
func drain(c *client.Client) {
	for range c.Events() {
	}
}

func cmdSync(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	var a apiFlags
	a.register(fs, true)
	conv := fs.String("conv", "", "conversation id (s:<a>:<b> or g:<group>); empty: everything that moved")
	from := fs.Int64("from", 0, "pull messages after this seq")
	limit := fs.Int("limit", 50, "page size")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Pulls go over HTTP (a short connection with the same credentials),
	// so a large window never loads a long connection.
	body, err := protojson.Marshal(&protocol.Sync{ConvId: *conv, FromSeq: *from, Limit: int32(*limit)})
	if err != nil {
		return err
	}
	data, err := a.call(ctx, http.MethodPost, "/im/v1/sync", nil, body, true)
	if err != nil {
		return fmt.Errorf("sync: %w", err)
	}
	reply := &protocol.SyncReply{}
	if err := protojson.Unmarshal(data, reply); err != nil {
		return fmt.Errorf("sync: malformed reply: %w", err)
	}
	for _, cv := range reply.Convs {
		fmt.Fprintf(out, "conv %s max_seq=%d read_seq=%d more=%v\n", cv.ConvId, cv.MaxSeq, cv.ReadSeq, cv.More)
		for _, m := range cv.Msgs {
			fmt.Fprintf(out, "  seq=%d from=%d at=%s: %s\n", m.Seq, m.Sender, time.UnixMilli(m.ServerTime).Format(time.TimeOnly), m.Payload)
		}
	}
	return nil
}

func cmdRead(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("read", flag.ContinueOnError)
	var d deviceFlags
	d.register(fs)
	conv := fs.String("conv", "", "conversation id")
	seq := fs.Int64("seq", 0, "read up to this seq")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *conv == "" {
		return fmt.Errorf("read: -conv is required")
	}
	c, err := d.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	go drain(c)
	if err := c.ReadMark(ctx, *conv, *seq); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	fmt.Fprintf(out, "read mark set: %s up to %d\n", *conv, *seq)
	return nil
}
