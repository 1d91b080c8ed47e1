package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "github.com/hubuim/hubuim/api/logic"
	"github.com/hubuim/hubuim/internal/logic/logicconf"
)

type testPKI struct {
	dir                   string
	caPool                *x509.CertPool
	serverCert, serverKey string
	clientCert            tls.Certificate
	caFile                string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p := &testPKI{dir: dir, caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	issue := func(name string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tpl := &x509.Certificate{
			SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	sDER, sKey := issue("logic", x509.ExtKeyUsageServerAuth)
	p.serverCert = writePEM(t, dir, "server.pem", "CERTIFICATE", sDER)
	skDER, _ := x509.MarshalECPrivateKey(sKey)
	p.serverKey = writePEM(t, dir, "server-key.pem", "EC PRIVATE KEY", skDER)
	cDER, cKey := issue("backend", x509.ExtKeyUsageClientAuth)
	p.clientCert = tls.Certificate{Certificate: [][]byte{cDER}, PrivateKey: cKey}
	return p
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestServeMutualTLS: with tls.client_ca_file, HTTP and gRPC clients
// without a certificate from that CA are refused; with one they are served.
func TestServeMutualTLS(t *testing.T) {
	p := newTestPKI(t)
	a, _, _ := startLogic(t, map[string]string{
		"TLS_CERT_FILE":      p.serverCert,
		"TLS_KEY_FILE":       p.serverKey,
		"TLS_CLIENT_CA_FILE": p.caFile,
	})
	url := "https://" + a.http.String() + "/goim/nodes/weighted"
	httpClient := func(certs ...tls.Certificate) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: p.caPool, Certificates: certs, MinVersion: tls.VersionTLS12},
		}}
	}
	if resp, err := httpClient().Get(url); err == nil {
		resp.Body.Close()
		t.Fatal("HTTPS without a client certificate was served")
	}
	resp, err := httpClient(p.clientCert).Get(url)
	if err != nil {
		t.Fatalf("HTTPS with a client certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}

	grpcNodes := func(certs ...tls.Certificate) error {
		creds := credentials.NewTLS(&tls.Config{RootCAs: p.caPool, Certificates: certs, MinVersion: tls.VersionTLS12})
		cc, err := grpc.NewClient(a.grpc.String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = pb.NewPushClient(cc).Nodes(ctx, &pb.NodesReq{})
		return err
	}
	if err := grpcNodes(); err == nil {
		t.Fatal("gRPC without a client certificate was served")
	}
	if err := grpcNodes(p.clientCert); err != nil {
		t.Fatalf("gRPC with a client certificate: %v", err)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	if _, err := (logicconf.TLSConfig{ClientCAFile: "x"}).Load(); err == nil {
		t.Fatal("client CA without a server certificate accepted")
	}
	if _, err := (logicconf.TLSConfig{CertFile: "/nonexistent", KeyFile: "/nonexistent"}).Load(); err == nil {
		t.Fatal("missing certificate files accepted")
	}
	if tc, err := (logicconf.TLSConfig{}).Load(); tc != nil || err != nil {
		t.Fatalf("empty TLS config = %v, %v", tc, err)
	}
}
