// Package client is the Go SDK for HubuIM: one device's connection to a
// comet, speaking the goim v2 frame protocol plus HubuIM's IM operations
// (PROTOCOL.md).
//
// # Connecting
//
// New checks a Config (its zero fields are defaults, each documented on the
// field); Run keeps the client connected until its context ends, Connect
// does the same in the background and returns once the first connection is
// authenticated, and Close stops everything (after flushing delivered
// acks); Done and Err tell when and why a client stopped by itself. Addresses come from Addrs or
// from logic's node list (NodeListURL, GET /goim/nodes/weighted), tried in
// order with fallback to the next; each is dialed over TCP, TLS, WebSocket
// or WebSocket+TLS. Auth carries mid, device key, platform, room, accepted
// ops and a token (TokenFunc refreshes it before every connection). A key
// the server assigns is reused on every reconnect. A rejected Auth is
// reported as an Error event wrapping ErrAuth and retried with backoff; an
// app whose token cannot be refreshed should Close on it.
//
// A dropped connection is replaced after a jittered exponential backoff
// (Backoff), which the node list's backoff hint may stretch (a server
// spreading a reconnect storm) but never shorten. Heartbeats use an
// adaptive interval: it starts at HeartbeatMin, grows by HeartbeatStep
// after HeartbeatGrowAfter answered heartbeats and shrinks by a step after
// a heartbeat goes unanswered, within [HeartbeatMin, HeartbeatMax] (60 s
// to 300 s, step 30 s by default), never above the interval the server
// asks for in its AuthReply or its node list. A heartbeat met by complete silence — not a byte for
// HeartbeatTimeout — marks the connection dead and it is replaced.
//
// # Events
//
// Everything the server sends arrives on Events as a typed Event:
// Connected, Disconnected, Kicked, Message, Notify, ReadMark, Presence,
// Push (business ops and room broadcasts, including the frames inside OpRaw
// batches) and Error. The channel is bounded (EventBuffer). When the app
// does not drain it, the connection's reader blocks: that is backpressure,
// not loss — nothing is dropped, but ACKs and heartbeat replies wait too,
// so Send stalls, the heartbeat may declare the connection dead, and the
// server may kick the connection as a slow consumer (Kicked with
// KICK_REASON_SLOW_CONSUMER). After a kick for a duplicate login or by an
// admin the client stops (Run returns a *KickedError); after any other
// kick it reconnects.
//
// # Sending
//
// Send gives a message a client message id (a UUIDv7, see IDGen) and
// resends the same MsgSend until the ACK for that id arrives: every
// SendTimeout, up to MaxResends times, and again on the next connection
// when the current one drops. The server deduplicates by client message
// id; Send returns the ACK once, with a *StatusError when its status is not
// OK. The sent message is then also delivered as a Message in its
// conversation's order, so the app sees every conversation as one ordered
// stream. An app that keeps an outbox across restarts uses NewMsgID and
// SendWithID, so that a message keeps its id and is stored once.
//
// # Receiving
//
// Per conversation the client keeps the highest contiguous seq it
// delivered. A message above it plus one is a gap: the message waits (at
// most ReorderLimit per conversation). Most gaps fill by themselves — the
// ACK of the device's own message overtakes the push of the peer's message
// that got the seq below it — so a gap is first given a grace without
// progress: twice the push lag the client measured on such gaps, between
// GapGrace (250ms by default) and 8 × GapGrace; then the missing range is
// pulled with Sync (op 24, conversation id, from_seq = the contiguous seq,
// SyncLimit); a reply with "more" is followed by the next page. Duplicates
// are dropped. A MsgNotify (op 26) pulls up to its max seq. A seq that the
// server cannot return (skipped by a seq jump — the reply is complete but
// starts after it, or max_seq covers it) is skipped, and a pull that makes
// no progress three times in a row is abandoned with an Error event
// wrapping ErrGapUnfilled; the client never loops. Delivered acks (op 23)
// carry the highest contiguous seq and are coalesced per conversation: one
// once the conversation went quiet for an AckInterval (1s), at most one
// per AckMaxDelay (10s) while it keeps moving, and a last one for every
// conversation that moved at Close. Every new connection starts with a Sync carrying the cursors
// of the known conversations (the most recently active first, as many as
// fit in MaxBody), so whatever moved while the device was away is pulled;
// the server caps one reply (in conversations and bytes) and sets
// more_convs when it left some out: the client then asks again with the
// cursors the reply advanced, until more_convs is clear. The server lists
// the conversations with a cursor first, then the others by id; the next
// round carries the cursors not yet shown up to date first and asks for
// the conversations without a cursor after the last one returned
// (after_conv_id), so rounds also get through more conversations than one
// Sync has room for. A round that advances nothing ends the rounds with an
// Error event wrapping ErrSyncStalled (the client never loops). Cursors returns the cursors for
// the app to persist and Config.Cursors restores them.
//
// The skip rule trusts the server's max_seq to be the highest stored seq of
// the conversation (not a counter that may run ahead of the store).
//
// A frame bigger than MaxInboundBody (1 MiB by default) is discarded as it
// is read, never buffered whole (an Error event with an *OversizeError).
// A SyncReply page that was too big is asked for again with half the page
// size; a single message too big to receive at all is skipped with an
// Error wrapping ErrTooLarge. A header claiming an impossible length is a
// protocol error and the connection is replaced.
//
// # Requests
//
// ReadMark, ChangeRoom, Sub and Unsub are acknowledged requests, retried
// on timeouts and reconnects (they are idempotent); room and accepted ops
// are kept for reconnects. Request sends any op once and returns the frame
// that answers it (matched by the frame seq).
//
// All methods are safe for concurrent use. Logs are per connection, never
// per message; metrics are optional (NewMetrics, shared by many clients).
package client
