package fleet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"lxcfleet/internal/etcdtest"
)

// pki writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all made here, as PEM files in dir.
func pki(t *testing.T, dir string) (ca, srvCert, srvKey, cliCert, cliKey string) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "lxcfleet test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, []byte) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}, IPAddresses: ips}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(k)
		return der, kb
	}
	sd, sk := leaf(2, "etcd", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	cd, ck := leaf(3, "host-1", x509.ExtKeyUsageClientAuth, nil)
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", sd), write("server.key", "EC PRIVATE KEY", sk),
		write("client.pem", "CERTIFICATE", cd), write("client.key", "EC PRIVATE KEY", ck)
}

// TestTLSToEtcd: with fleet.ca, fleet.cert and fleet.key a host talks to
// an etcd that requires client certificates; without the client
// certificate, or without the CA, it does not get in.
func TestTLSToEtcd(t *testing.T) {
	dir := t.TempDir()
	ca, sc, sk, cc, ck := pki(t, dir)
	c := etcdtest.StartWith(t, 1, etcdtest.Options{TLS: &etcdtest.TLSFiles{Cert: sc, Key: sk, ClientCA: ca}})
	// try publishes within limit: a refused handshake is only retried
	// until the deadline (gRPC does not give up on its own), so the
	// refused tries get 1 s, not the store's 5 s.
	try := func(cfg Config, limit time.Duration) error {
		cfg.Endpoints, cfg.DialTimeout = c.Endpoints(), 2*time.Second
		cli, err := Dial(cfg)
		if err != nil {
			return err
		}
		defer cli.Close()
		ctx, cancel := context.WithTimeout(t.Context(), limit)
		defer cancel()
		_, err = NewStore(cli, "/lxcfleet-tls", "g").Publish(ctx, Release{Ref: "main", Commit: cNew}, nil, "test")
		return err
	}
	if err := try(Config{CA: ca, Cert: cc, Key: ck}, 30*time.Second); err != nil {
		t.Fatalf("publishing over TLS with a client certificate: %v", err)
	}
	if err := try(Config{CA: ca}, time.Second); err == nil {
		t.Errorf("publishing without a client certificate: want refused")
	}
	if err := try(Config{Cert: cc, Key: ck}, time.Second); err == nil {
		t.Errorf("publishing without the CA (the server's certificate is unknown): want refused")
	}
	if _, err := Dial(Config{Endpoints: c.Endpoints(), CA: filepath.Join(dir, "missing.pem")}); err == nil {
		t.Errorf("dialing with a missing CA file: want an error naming it")
	}
}

// TestProbeNamesTheTrouble: what etcd's client reports only as a deadline,
// Probe names per endpoint: nothing listening, a TLS handshake that fails
// (no CA, no client certificate), http:// on a TLS server; and nothing
// when the config is right.
func TestProbeNamesTheTrouble(t *testing.T) {
	dir := t.TempDir()
	ca, sc, sk, cc, ck := pki(t, dir)
	c := etcdtest.StartWith(t, 1, etcdtest.Options{TLS: &etcdtest.TLSFiles{Cert: sc, Key: sk, ClientCA: ca}})
	ep := c.Endpoints()[0]
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	probe := func(cfg Config) error {
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		return Probe(ctx, cfg)
	}
	if err := probe(Config{Endpoints: []string{ep}, CA: ca, Cert: cc, Key: ck}); err != nil {
		t.Errorf("probe with the right TLS files: %v", err)
	}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"nothing listening", Config{Endpoints: []string{closed}}, closed + ": unreachable"},
		{"no CA", Config{Endpoints: []string{ep}, Cert: cc, Key: ck}, "TLS handshake failed"},
		{"no client certificate", Config{Endpoints: []string{ep}, CA: ca}, "TLS handshake failed"},
		{"http on a TLS server", Config{Endpoints: []string{strings.Replace(ep, "https://", "http://", 1)}}, "the server speaks TLS"},
	} {
		err := probe(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: probe says %v, want %q", tc.name, err, tc.want)
		}
	}
}
