// Package etcdtest starts real etcd clusters for tests: each member is its
// own process (./etcdmember, go.etcd.io/etcd/server/v3/embed v3.7.3, built
// once per test binary with `go build`), listening on random free ports of
// 127.0.0.1, so that a test can SIGKILL or SIGSTOP one member. Every member
// is stopped (by its pid) and its data removed when the test ends.
package etcdtest
