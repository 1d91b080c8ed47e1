package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hubuim/hubuim/api/protocol"
)

// addrs lists the addresses of one connection round: the node list first,
// then Addrs.
func (c *Client) addrs() ([]target, error) {
	var list []string
	var nodeErr error
	if c.cfg.NodeListURL != "" {
		nodes, hints, err := fetchNodes(c.ctx, c.cfg.HTTPClient, c.cfg.NodeListURL, c.cfg.Transport, c.cfg.Platform)
		if err != nil {
			nodeErr = err
		} else {
			c.applyHints(hints)
		}
		list = append(list, nodes...)
	}
	list = append(list, c.cfg.Addrs...)
	targets := make([]target, 0, len(list))
	for _, a := range list {
		t, err := parseAddr(a, c.cfg.Transport, c.cfg.WSPath)
		if err != nil {
			nodeErr = errors.Join(nodeErr, err)
			continue
		}
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		return nil, errors.Join(ErrNoAddress, nodeErr)
	}
	if nodeErr != nil { // falling back to Addrs; still worth knowing
		c.log.Warn("hubuim client: node list", "err", nodeErr)
		c.emit(Error{Err: nodeErr})
	}
	return targets, nil
}

// applyHints follows a node list's connection hints: the reconnect
// backoff is the configured one stretched by the list's (recomputed from
// the configuration each time, so a later list can relax it again), and
// heartbeats come at least as often as the list asks, like heartbeat_ms
// in an AuthReply (goim servers send an empty AuthReply: their node list
// is where the interval comes from). Called by runLoop only, which alone
// reads backoff.
func (c *Client) applyHints(h nodeHints) {
	c.backoff = c.cfgBackoff.withHints(h.backoff)
	c.nodeHeartbeat = h.heartbeat
}

// dialAny dials and authenticates the addresses in order and returns the
// first connection that succeeds.
func (c *Client) dialAny() (*session, error) {
	targets, err := c.addrs()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, t := range targets {
		s, err := c.dialOne(t)
		if err == nil {
			return s, nil
		}
		if c.ctx.Err() != nil {
			return nil, c.ctx.Err()
		}
		errs = append(errs, fmt.Errorf("%s: %w", t, err))
	}
	return nil, errors.Join(errs...)
}

// authBody is the JSON body of Auth (op 7).
type authBody struct {
	Mid      int64   `json:"mid"`
	Key      string  `json:"key"`
	RoomID   string  `json:"room_id"`
	Platform string  `json:"platform"`
	Accepts  []int32 `json:"accepts"`
	Token    string  `json:"token,omitempty"`
}

// authReply is HubuIM's optional JSON body of AuthReply (op 8).
type authReply struct {
	Mid         int64  `json:"mid"`
	Key         string `json:"key"`
	RoomID      string `json:"room_id"`
	HeartbeatMs int64  `json:"heartbeat_ms"`
}

func (c *Client) dialOne(t target) (*session, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
	defer cancel()
	token := c.cfg.Token
	if c.cfg.TokenFunc != nil {
		tok, err := c.cfg.TokenFunc(ctx)
		if err != nil {
			return nil, fmt.Errorf("%w: token: %w", ErrAuth, err)
		}
		token = tok
	}
	conn, err := dial(ctx, t, &c.cfg)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.close() })
	reply, err := c.auth(conn, token)
	if !stop() || err != nil {
		_ = conn.close()
		if err == nil || ctx.Err() != nil {
			err = errors.Join(err, ctx.Err())
		}
		return nil, err
	}
	c.mu.Lock()
	if reply.Mid != 0 {
		c.mid = reply.Mid
	}
	if reply.Key != "" {
		c.key = reply.Key
	}
	if reply.RoomID != "" {
		c.roomID = reply.RoomID
	}
	c.mu.Unlock()
	// This server's caps replace the last server's.
	c.hb.reset()
	c.hb.capAt(c.nodeHeartbeat)
	if ms := reply.HeartbeatMs; ms > 0 && ms < maxHintMs {
		c.hb.capAt(time.Duration(ms) * time.Millisecond)
	}
	return newSession(conn, t.String()), nil
}

func (c *Client) auth(conn frameConn, token string) (authReply, error) {
	c.mu.Lock()
	body, err := json.Marshal(authBody{
		Mid: c.mid, Key: c.key, RoomID: c.roomID, Platform: c.cfg.Platform,
		Accepts: slices.Clone(c.accepts), Token: token,
	})
	c.mu.Unlock()
	if err != nil {
		return authReply{}, err
	}
	if err := conn.writeFrame(protocol.OpAuth, c.nextSeq(), body); err != nil {
		return authReply{}, err
	}
	if err := conn.setReadDeadline(time.Now().Add(c.cfg.DialTimeout)); err != nil {
		return authReply{}, err
	}
	f, err := conn.readFrame()
	if err != nil {
		return authReply{}, fmt.Errorf("%w: %w", ErrAuth, err)
	}
	var reply authReply
	switch f.Op {
	case protocol.OpAuthReply:
		if len(f.Body) > 0 {
			if err := json.Unmarshal(f.Body, &reply); err != nil {
				return authReply{}, fmt.Errorf("%w: AuthReply body: %w", ErrProtocol, err)
			}
		}
	case protocol.OpDisconnectReply:
		return authReply{}, fmt.Errorf("%w: %w", ErrAuth, &ServerClosedError{Reason: string(f.Body)})
	case protocol.OpKick:
		return authReply{}, fmt.Errorf("%w: %w", ErrAuth, decodeKick(f.Body))
	default:
		return authReply{}, fmt.Errorf("%w: op %d before AuthReply", ErrProtocol, f.Op)
	}
	return reply, conn.setReadDeadline(time.Time{})
}
