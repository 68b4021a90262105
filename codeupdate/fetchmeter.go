package codeupdate

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/plumbing/transport/server"
)

// byteMeter counts bytes received by a fetch: the origin's progress
// messages and, over HTTP(S), every byte of the answers' bodies.
type byteMeter struct{ n atomic.Int64 }

func (b *byteMeter) Write(p []byte) (int, error) {
	b.n.Add(int64(len(p)))
	return len(p), nil
}

// meterKey is the context key of a fetch's *byteMeter.
type meterKey struct{}

// withMeter returns ctx carrying meter for the HTTP transport.
func withMeter(ctx context.Context, meter *byteMeter) context.Context {
	return context.WithValue(ctx, meterKey{}, meter)
}

var installOnce sync.Once

// installTransports sets two of go-git's transports, once per process
// (go-git keeps them in a process-wide registry; codeupdate is its only
// importer):
//
//   - http and https count the bytes of every response body into the
//     *byteMeter of the request's context (the fetch's), so that the stall
//     watchdog sees bytes arrive even inside one large pkt-line, which
//     go-git hands on only when it is whole. The transport keeps
//     http.DefaultTransport's settings (proxy from the environment).
//   - file (local paths and file:// URLs) is served in-process by go-git's
//     server transport instead of a `git-upload-pack` child: when writing
//     the pack fails (a full disk), go-git closes the session and waits for
//     that child, which waits for go-git to read its output, forever.
func installTransports() {
	installOnce.Do(func() {
		c := &http.Client{Transport: &meteredTransport{next: http.DefaultTransport.(*http.Transport).Clone()}}
		t := githttp.NewClientWithOptions(c, nil)
		client.InstallProtocol("http", t)
		client.InstallProtocol("https", t)
		client.InstallProtocol("file", server.NewClient(localLoader{}))
	})
}

// localLoader opens a local origin for go-git's in-process server: a bare
// repository at the path, or else the .git folder of a work tree there
// (git-upload-pack accepted both; go-git's own loader opens a work tree's
// root, where it finds no refs).
type localLoader struct{}

func (localLoader) Load(ep *transport.Endpoint) (storer.Storer, error) {
	_, cerr := os.Stat(filepath.Join(ep.Path, "config"))
	if fi, err := os.Stat(filepath.Join(ep.Path, ".git")); cerr != nil && err == nil && fi.IsDir() {
		dotGit := *ep
		dotGit.Path = filepath.Join(ep.Path, ".git")
		return server.DefaultLoader.Load(&dotGit)
	}
	return server.DefaultLoader.Load(ep)
}

// meteredTransport wraps response bodies in a meteredBody.
type meteredTransport struct{ next http.RoundTripper }

func (t *meteredTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := t.next.RoundTrip(req)
	if err != nil || res.Body == nil {
		return res, err
	}
	if m, ok := req.Context().Value(meterKey{}).(*byteMeter); ok {
		m.n.Add(1) // an answer began: headers count as progress
		res.Body = &meteredBody{ReadCloser: res.Body, m: m}
	}
	return res, nil
}

type meteredBody struct {
	io.ReadCloser
	m *byteMeter
}

func (b *meteredBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.m.n.Add(int64(n))
	return n, err
}
