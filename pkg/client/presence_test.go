package client

import (
	"fmt"
	"slices"
	"testing"

	"github.com/hubuim/hubuim/api/protocol"
)

// Presence events of one user that arrive out of order (decided by two
// logics a moment apart) leave the app with the later state: an event
// with a smaller version than one already emitted is dropped; events
// without a version always pass.
func TestPresenceOutOfOrderDropped(t *testing.T) {
	srv := newFakeServer(t, TransportTCP)
	_, r := startClient(t, testConfig(srv))
	srv.pushProto(protocol.OpPresenceEvent, &protocol.PresenceEvent{User: 3, Online: true, Version: 200})  // the later change
	srv.pushProto(protocol.OpPresenceEvent, &protocol.PresenceEvent{User: 3, Online: false, Version: 100}) // overtaken
	srv.pushProto(protocol.OpPresenceEvent, &protocol.PresenceEvent{User: 4, Online: false, Version: 50})  // another user
	srv.pushProto(protocol.OpPresenceEvent, &protocol.PresenceEvent{User: 3, Online: false})               // no version
	srv.pushProto(protocol.OpPresenceEvent, &protocol.PresenceEvent{User: 3, Online: false, Version: 300})
	srv.pushProto(protocol.OpReadMark, &protocol.ReadMark{ConvId: "g:1", ReadSeq: 1, User: 3}) // a marker: all above were read
	waitFor(t, "events", func() bool { return len(eventsOf[ReadMark](r)) == 1 })
	var got []string
	for _, p := range eventsOf[Presence](r) {
		got = append(got, fmt.Sprintf("%d/%v/%d", p.User, p.Online, p.Version))
	}
	want := []string{"3/true/200", "4/false/50", "3/false/0", "3/false/300"}
	if !slices.Equal(got, want) {
		t.Fatalf("presence events %v, want %v", got, want)
	}
}
