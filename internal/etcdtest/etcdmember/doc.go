// Command etcdmember runs one real etcd member (go.etcd.io/etcd/server/v3
// embed, the same version as the client lxcfleet uses) as its own process,
// for tests that need a cluster whose members they can SIGKILL or SIGSTOP.
// Flags name the member, its data folder, its client and peer URLs
// (loopback only) and the initial cluster; it prints "ready" on stdout once
// the member serves and stops on SIGTERM or SIGINT.
package main
