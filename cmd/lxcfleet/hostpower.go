package main

import (
	"errors"
	"fmt"
	"net/url"

	"github.com/spf13/cobra"

	"lxcfleet/agent"
	"lxcfleet/lxcctl"
)

// runHostJob is runJob for the host's boot and shutdown path (the
// packaged lxcfleet-lockers.service): a job that already runs is waited
// for at boot (the agent's own boot recovery, say), and cancelled, then
// waited for, at shutdown (a host shutdown stays bounded: the cancelled
// job finishes the steps in flight and begins none), then req runs.
func runHostJob(cmd *cobra.Command, g *globals, cf *clientFlags, req agent.Request, cancelBusy bool, verb string, done ...lxcctl.Phase) (agent.Job, *progress, error) {
	what := "boot"
	if req.HostShutdown {
		what = "host shutdown"
	}
	for {
		job, p, err := runJob(cmd, g, cf, req, verb, done...)
		var ae *apiError
		if !errors.As(err, &ae) || ae.JobID == "" {
			return job, p, err
		}
		cl, cerr := cf.connect(cmd, g)
		if cerr != nil {
			return job, p, err
		}
		if cancelBusy {
			fmt.Fprintf(g.stderr, "%s: cancelling job %s, which runs (it finishes the steps in flight)\n", what, ae.JobID)
			if cerr := cl.do(cmd.Context(), "POST", "/v1/jobs/"+url.PathEscape(ae.JobID)+"/cancel", nil, nil); cerr != nil {
				fmt.Fprintf(g.stderr, "%s: cancelling job %s: %v\n", what, ae.JobID, cerr)
			}
		} else {
			fmt.Fprintf(g.stderr, "%s: waiting for job %s to end\n", what, ae.JobID)
		}
		_, ferr := cl.follow(cmd.Context(), ae.JobID, nil)
		cl.Close()
		if ferr != nil {
			return job, p, fmt.Errorf("%s: waiting for job %s: %w", what, ae.JobID, ferr)
		}
	}
}
