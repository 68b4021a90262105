package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
)

// clientFlags pick how a command reaches the agent: the daemon on its Unix
// socket, or (with --local, or when no daemon answers) an agent in this
// process running the same code with no listener.
type clientFlags struct {
	socket   string
	local    bool
	stateDir string
}

func (c *clientFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.socket, "socket", "", "the agent's Unix socket (default: listen.socket of the config)")
	f.BoolVar(&c.local, "local", false, "run in this process instead of through the agent daemon")
	f.StringVar(&c.stateDir, "state-dir", "", "journal folder of a --local run (default: state_dir of the config; LXCPATH/.lxcfleet for another lxcpath)")
}

// apiClient talks HTTP to an agent: over its socket, or in process.
type apiClient struct {
	http  *http.Client
	local *agent.Agent // set for an in-process agent
	close func()
}

// connect returns a client of the daemon when one answers on the socket
// and serves the same lxcpath, and of an in-process agent otherwise (with
// a note on stderr unless --local asked for it).
func (c *clientFlags) connect(cmd *cobra.Command, g *globals) (*apiClient, error) {
	s, err := g.wire(cmd)
	if err != nil {
		return nil, err
	}
	lxcpath := s.fc.LXCPath
	explicitPath := cmd.Flags().Changed("lxcpath")
	sock := c.socket
	if sock == "" {
		sock = s.fc.Listen.Socket
	}
	why := ""
	if !c.local && c.stateDir == "" && sock != "" {
		cl := &apiClient{http: socketClient(sock), close: func() {}}
		var host agent.HostInfo
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
		err := cl.get(ctx, "/v1/host", &host)
		cancel()
		switch {
		case err == nil && (!explicitPath || filepath.Clean(host.LXCPath) == filepath.Clean(lxcpath)):
			slog.Debug("using the agent", "socket", sock)
			return cl, nil
		case err == nil:
			why = fmt.Sprintf("the agent on %s serves %s, not %s", sock, host.LXCPath, lxcpath)
		default:
			why = fmt.Sprintf("no agent answers on %s", sock)
			slog.Debug("no agent answers", "socket", sock, "err", err)
		}
	}
	stateDir := c.stateDir
	if stateDir == "" && explicitPath && s.lxcpathOverridden() {
		stateDir = filepath.Join(lxcpath, ".lxcfleet")
	}
	if stateDir != "" {
		s.fc.StateDir = stateDir
	}
	if why != "" {
		fmt.Fprintf(g.stderr, "lxcfleet: %s: running in this process (journal in %s)\n", why, s.fc.StateDir)
	}
	a, err := s.agent(false)
	if err != nil {
		return nil, err
	}
	return inProcess(a), nil
}

func socketClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// inProcess serves a's API on an in-memory listener: the CLI's --local
// mode goes through exactly the handlers the daemon serves.
func inProcess(a *agent.Agent) *apiClient {
	ln := newPipeListener()
	srv := &http.Server{Handler: a.Handler()}
	go func() { _ = srv.Serve(ln) }()
	return &apiClient{
		local: a,
		http: &http.Client{Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return ln.dial() },
		}},
		close: func() {
			_ = srv.Close()
			if err := a.Close(); err != nil {
				slog.Warn("closing the journal", "err", err)
			}
		},
	}
}

// Close ends an in-process agent (cancelling its job) and closes its journal.
func (c *apiClient) Close() { c.close() }

// apiError is an error response of the agent.
type apiError struct {
	Status int
	Msg    string
	JobID  string
}

func (e *apiError) Error() string { return e.Msg }

// asCLIError maps an API error to the CLI's exit codes: 4xx is bad input
// (2) except a conflict (a running job: 1).
func asCLIError(err error) error {
	var ae *apiError
	if errors.As(err, &ae) && ae.Status >= 400 && ae.Status < 500 && ae.Status != http.StatusConflict {
		return usageError{err}
	}
	return err
}

func (c *apiClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://lxcfleet"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
			JobID string `json:"job_id"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
		}
		return &apiError{Status: resp.StatusCode, Msg: e.Error, JobID: e.JobID}
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		*raw = append((*raw)[:0], b...)
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

func (c *apiClient) get(ctx context.Context, path string, out any) error {
	return c.do(ctx, "GET", path, nil, out)
}

// submit starts a job.
func (c *apiClient) submit(ctx context.Context, req agent.Request) (agent.Job, error) {
	var j agent.Job
	err := c.do(ctx, "POST", "/v1/jobs", req, &j)
	return j, err
}

// follow reads a job's event stream, calling each for every event, until
// the job ends; it returns the final job record.
func (c *apiClient) follow(ctx context.Context, id string, each func(agent.Event)) (agent.Job, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://lxcfleet/v1/jobs/"+url.PathEscape(id)+"/events", nil)
	if err != nil {
		return agent.Job{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return agent.Job{}, fmt.Errorf("following job %s: %w", id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		var e struct{ Error string }
		_ = json.Unmarshal(b, &e)
		return agent.Job{}, &apiError{Status: resp.StatusCode, Msg: e.Error}
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var typ string
	var data []byte
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			typ = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[len("data: "):]...)
		case line == "" && data != nil:
			if typ == "end" {
				var j agent.Job
				if err := json.Unmarshal(data, &j); err != nil {
					return j, fmt.Errorf("decoding the end of job %s: %w", id, err)
				}
				return j, nil
			}
			var e agent.Event
			if err := json.Unmarshal(data, &e); err == nil && each != nil {
				each(e)
			}
			typ, data = "", nil
		}
	}
	if err := ctx.Err(); err != nil {
		return agent.Job{}, err
	}
	return agent.Job{}, agentGone(id, sc.Err())
}

// agentGone is the error of a job stream that ended before the job did
// (err: how it broke, nil at a clean end): the agent went away. The job
// is journaled; the agent's next start recovers it (I1), and the job can
// be followed again by its id.
func agentGone(id string, err error) error {
	how := "the stream ended"
	if err != nil {
		how = err.Error()
	}
	return fmt.Errorf("following job %s: the agent went away before the job ended (%s): the job is journaled and the agent's next start recovers it (systemctl status lxcfleet); follow it then with `lxcfleet jobs %s --follow`", id, how, id)
}

// pipeListener is a net.Listener of in-memory connections.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) dial() (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-process" }
