//go:build !linux

package comet

import "syscall"

// poller is Linux-only (epoll); elsewhere every connection keeps its
// reader goroutine.
type poller struct{}

func newPoller() (*poller, error)                  { return nil, errPollUnsupported }
func (p *poller) run()                             {}
func (p *poller) stop()                            {}
func (p *poller) close()                           {}
func (p *poller) add(*conn, syscall.RawConn) error { return errPollUnsupported }
func (p *poller) remove(*conn, syscall.RawConn)    {}
func readNonblock(int, []byte) (int, bool, error)  { return 0, false, errPollUnsupported }
