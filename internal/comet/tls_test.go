package comet

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/hubuim/hubuim/api/protocol"
)

// selfSigned writes a certificate for 127.0.0.1 and returns its files and
// a pool trusting it.
func selfSigned(tb testing.TB) (certFile, keyFile string, pool *x509.CertPool) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "comet-test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

func TestTLSListeners(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	e := startServer(t, func(c *Config) {
		c.TCPTLSAddr = "127.0.0.1:0"
		c.WSSAddr = "127.0.0.1:0"
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
	})
	tcfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	nc, err := tls.Dial("tcp", e.s.Addrs().TCPTLS, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	tc := &client{tb: t, nc: nc}
	e.auth(t, tc, authBody{Mid: 1, Key: "tls", RoomID: "r"})

	d := websocket.Dialer{TLSClientConfig: tcfg}
	ws, _, err := d.Dial("wss://"+e.s.Addrs().WSS+"/sub", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	wc := &client{tb: t, ws: ws, nc: ws.UnderlyingConn()}
	e.auth(t, wc, authBody{Mid: 2, Key: "wss", RoomID: "r"})

	for _, c := range []*client{tc, wc} {
		c.send(protocol.OpHeartbeat, 3, nil)
		c.expect(protocol.OpHeartbeatReply)
	}
	if err := e.s.broadcastRoom("r", protocol.AppendFrame(nil, 1, 1001, 0, []byte("x"))); err != nil {
		t.Fatal(err)
	}
	tc.expect(1001)
	wc.expect(1001)
	e.marker(t, tc, "tls")
	e.marker(t, wc, "wss")
}

func TestTLSHandshakeTimeout(t *testing.T) {
	certFile, keyFile, _ := selfSigned(t)
	e := startServer(t, func(c *Config) {
		c.TCPTLSAddr = "127.0.0.1:0"
		c.TLSCertFile, c.TLSKeyFile = certFile, keyFile
		c.HandshakeTimeout = 100 * time.Millisecond
	})
	// A client that opens TCP and never starts TLS is closed by the wheel.
	nc, err := net.Dial("tcp", e.s.Addrs().TCPTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(waitFor))
	var b [1]byte
	if _, err := nc.Read(b[:]); err == nil {
		t.Fatal("expected close")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("not closed within the handshake timeout")
	}
	eventually(t, "no readers", func() bool { return e.s.readers.Load() == 0 })
}
