package bench

import (
	"net"
	"testing"
)

// TestListenScanner checks that one sock_diag dump sees a port open and
// then closed: the adaptive prober's edges.
func TestListenScanner(t *testing.T) {
	s, err := newListenScanner()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	got := map[int]bool{}
	if err := s.scan(got); err != nil {
		t.Fatal(err)
	}
	if !got[port] {
		t.Errorf("got listening ports %v, want %d among them", got, port)
	}
	l.Close()
	if err := s.scan(got); err != nil {
		t.Fatal(err)
	}
	if got[port] {
		t.Errorf("port %d still listed after close", port)
	}
}
