package protocol

// Operations of PROTOCOL.md. The goim ones keep goim's numbers.
const (
	OpHandshake       int32 = 0
	OpHandshakeReply  int32 = 1
	OpHeartbeat       int32 = 2
	OpHeartbeatReply  int32 = 3
	OpSendMsg         int32 = 4
	OpSendMsgReply    int32 = 5
	OpDisconnectReply int32 = 6
	OpAuth            int32 = 7
	OpAuthReply       int32 = 8
	OpRaw             int32 = 9
	OpProtoReady      int32 = 10
	OpProtoFinish     int32 = 11
	OpChangeRoom      int32 = 12
	OpChangeRoomReply int32 = 13
	OpSub             int32 = 14
	OpSubReply        int32 = 15
	OpUnsub           int32 = 16
	OpUnsubReply      int32 = 17

	OpMsgSend         int32 = 20
	OpMsgSendAck      int32 = 21
	OpMsgPush         int32 = 22
	OpMsgDeliveredAck int32 = 23
	OpSync            int32 = 24
	OpSyncReply       int32 = 25
	OpMsgNotify       int32 = 26
	OpReadMark        int32 = 27
	OpReadMarkReply   int32 = 28
	OpPresenceEvent   int32 = 29
	OpKick            int32 = 30

	// OpBusinessMin is the lowest operation a business backend may push.
	// Pushes by key, user or to all reach a connection only if the
	// connection accepts the op; ops below OpBusinessMin are always accepted.
	OpBusinessMin int32 = 1000
)

// Version is the protocol version HubuIM writes.
const Version int32 = 1

// AlwaysAccepted reports whether op bypasses a connection's accepted ops.
func AlwaysAccepted(op int32) bool { return op < OpBusinessMin }
