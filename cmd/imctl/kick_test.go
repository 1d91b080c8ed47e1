package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/hubuim/hubuim/api/protocol"
	"github.com/hubuim/hubuim/pkg/client"
)

// imctl listen ended by a fatal kick exits with the kick as its error (it
// used to exit 0; found by review).
func TestListenKickedExitsWithError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	kick, _ := proto.Marshal(&protocol.Kick{Reason: protocol.KickReason_KICK_REASON_DUPLICATE_LOGIN, Message: "replaced"})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var hdr [protocol.HeaderLen]byte
				f, err := protocol.ReadFrame(bufio.NewReader(c), &hdr, protocol.DefaultMaxBody, nil)
				if err != nil {
					return
				}
				reply, _ := json.Marshal(map[string]any{"mid": 1, "key": "k"})
				out := protocol.AppendFrame(nil, protocol.Version, protocol.OpAuthReply, f.Seq, reply)
				out = protocol.AppendFrame(out, protocol.Version, protocol.OpKick, 0, kick)
				_, _ = c.Write(out)
				_, _ = c.Read(make([]byte, 1)) // until the client goes
			}()
		}
	}()
	_, err = runCmd(t, "listen", "-comet", ln.Addr().String(), "-mid", "1")
	if _, ok := errors.AsType[*client.KickedError](err); !ok {
		t.Fatalf("listen: %v, want the *KickedError", err)
	}
}
