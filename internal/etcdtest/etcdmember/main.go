package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	name := flag.String("name", "m0", "member name")
	dir := flag.String("data-dir", "", "data folder")
	client := flag.String("client", "", "client URL, e.g. http://127.0.0.1:2379")
	peer := flag.String("peer", "", "peer URL, e.g. http://127.0.0.1:2380")
	cluster := flag.String("initial-cluster", "", "name=peerURL,... of every member")
	token := flag.String("token", "lxcfleet-test", "initial cluster token")
	cert := flag.String("cert", "", "server certificate (PEM) for an https client URL")
	key := flag.String("key", "", "its key (PEM)")
	ca := flag.String("client-ca", "", "CA (PEM) that client certificates must chain to; set: clients need one")
	flag.Parse()
	tls := tlsFiles{cert: *cert, key: *key, ca: *ca}
	if err := run(*name, *dir, *client, *peer, *cluster, *token, tls); err != nil {
		fmt.Fprintf(os.Stderr, "etcdmember %s: %v\n", *name, err)
		os.Exit(1)
	}
}

// tlsFiles are the client listener's TLS files (empty: plain http).
type tlsFiles struct{ cert, key, ca string }

func run(name, dir, client, peer, cluster, token string, tf tlsFiles) error {
	cu, err := url.Parse(client)
	if err != nil {
		return fmt.Errorf("parsing client URL %q: %w", client, err)
	}
	pu, err := url.Parse(peer)
	if err != nil {
		return fmt.Errorf("parsing peer URL %q: %w", peer, err)
	}
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cluster
	cfg.InitialClusterToken = token
	cfg.ClusterState = embed.ClusterStateFlagNew
	if tf.cert != "" {
		cfg.ClientTLSInfo.CertFile, cfg.ClientTLSInfo.KeyFile = tf.cert, tf.key
		if tf.ca != "" {
			cfg.ClientTLSInfo.TrustedCAFile, cfg.ClientTLSInfo.ClientCertAuth = tf.ca, true
		}
	}
	cfg.LogLevel = "error"
	cfg.Logger = "zap"
	// Loopback only, small and quick to elect: a test cluster.
	cfg.TickMs = 50
	cfg.ElectionMs = 500
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("starting the member: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		return fmt.Errorf("the member was not ready within 60s")
	}
	fmt.Println("ready")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("serving: %w", err)
	}
}
