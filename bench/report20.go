package bench

import (
	"fmt"
	"strings"

	"lxcfleet/provision"
)

// held returns scenario id's figures for a socket mode, nil when it did
// not run.
func (rep *Report) held(id, socket string) *HeldFigures {
	for i := range rep.Held {
		if h := &rep.Held[i]; h.ID == id && h.Socket == socket && h.Err == "" && h.Clients.Requests > 0 {
			return h
		}
	}
	return nil
}

// heldAlone is one restart alone of a socket mode's fleet, nil when not
// measured.
func (rep *Report) heldAlone(socket string) *HeldAlone {
	for i := range rep.HeldAlone {
		if a := &rep.HeldAlone[i]; a.Socket == socket && !a.UnderTraffic && a.Err == "" && a.Median > 0 {
			return a
		}
	}
	return nil
}

// targets20 adds issue 20's targets: no failed request with held sockets
// (today's failures beside), the rolling update's p99 request latency
// against one restart alone, and the density scenario's.
func (rep *Report) targets20(add func(name, want, measured string, met *bool, note string)) {
	b := func(v bool) *bool { return &v }
	if len(rep.Held) == 0 && rep.Density == nil {
		return
	}
	failed := func(h *HeldFigures) string {
		c := h.Clients
		return fmt.Sprintf("%d of %d (%d refused, %d reset, %d timed out, %d other)", c.Failed(), c.Requests, c.Refused, c.Reset, c.TimedOut, c.Other)
	}
	for _, id := range []string{"6", "7"} {
		strategy := map[string]string{"6": "rolling", "7": "offline"}[id]
		name := "(20) held sockets: 0 failed requests during the " + strategy + " update"
		held, app := rep.held(id, provision.SocketHeld), rep.held(id, provision.SocketApp)
		if held == nil {
			if rep.ran(id) {
				add(name, "0", "—", nil, rep.heldErr(id, provision.SocketHeld))
			}
			continue
		}
		note := fmt.Sprintf("%d lockers, a new connection every %.0f ms to each, window %.1f s", held.N, held.IntervalMs, held.WindowSeconds)
		if app != nil {
			note += fmt.Sprintf("; today's sockets: %s failed, window %.1f s", failed(app), app.WindowSeconds)
		}
		add(name, "0", failed(held), b(held.Clients.Failed() == 0), note)
	}
	if held := rep.held("6", provision.SocketHeld); held != nil {
		name := "(20) rolling, held sockets: p99 request latency ≤ one restart alone + 100 ms"
		if a := rep.heldAlone(provision.SocketHeld); a != nil {
			lim := 1000*a.Median + 100
			note := fmt.Sprintf("p50 %.0f ms, max %.0f ms; one restart alone (stop call → a queued request answered) %.0f ms, median of %d; in the update a locker waited %.2f s (max %.2f) from stopping to starting (the stop and a start slot, W) and took %.2f s (max %.2f) from starting to healthy",
				held.Clients.P50ms, held.Clients.MaxMs, 1000*a.Median, len(a.Seconds), held.StopToStartP50, held.StopToStartMax, held.StartToHealthyP50, held.StartToHealthyMax)
			if i, e := held.InRestart, held.Elsewhere; i.Requests+e.Requests > 0 {
				note += fmt.Sprintf("; the %d requests sent to a locker while it restarted: p99 %.0f ms, the %d others: p99 %.0f ms", i.Requests, i.P99ms, e.Requests, e.P99ms)
			}
			if app := rep.held("6", provision.SocketApp); app != nil {
				note += fmt.Sprintf("; today's sockets: p99 %.0f ms of the answered", app.Clients.P99ms)
			}
			add(name, fmt.Sprintf("≤ %.0f ms", lim), fmt.Sprintf("%.0f ms", held.Clients.P99ms), b(held.Clients.P99ms <= lim), note)
		} else {
			add(name, "—", fmt.Sprintf("%.0f ms", held.Clients.P99ms), nil, "one restart alone not measured")
		}
	}
	if d := rep.Density; d != nil {
		name := "(20) density: first request to a sleeping locker ≤ 1.5× one start alone"
		if d.Err != "" || d.WakeMedian <= 0 || d.StartMedian <= 0 {
			add(name, "—", "—", nil, orDash(d.Err))
		} else {
			lim := 1.5 * d.StartMedian
			add(name, fmt.Sprintf("≤ %.0f ms (1.5 × %.0f ms)", 1000*lim, 1000*d.StartMedian), fmt.Sprintf("%.0f ms (%.2f×)", 1000*d.WakeMedian, d.WakeMedian/d.StartMedian), b(d.WakeMedian <= lim),
				fmt.Sprintf("medians of %d; wakes %s s, starts alone %s s (a start-all job of its own, submitted → ended)%s", len(d.WakeSeconds), secs(d.WakeSeconds), secs(d.StartSeconds), rep.aloneNote()))
		}
		name = "(20) density: an update restarts only the awake lockers"
		if d.UpdateWindow > 0 && d.Err == "" {
			add(name, fmt.Sprintf("the %d awake (running) only", d.UpdateAwake), fmt.Sprintf("%d of %d started, %d of them asleep before", d.UpdateRestarted, d.N, len(d.UpdateWoken)),
				b(len(d.UpdateWoken) == 0 && d.UpdateRestarted > 0),
				fmt.Sprintf("window %.1f s; %d not running before it, %d recorded asleep after it (sleeping.json)", d.UpdateWindow, d.N-d.UpdateAwake, d.UpdateAsleepThen))
		} else {
			add(name, "—", "—", nil, orDash(d.Err))
		}
	}
}

// ran reports whether an issue 20 scenario was asked for.
func (rep *Report) ran(id string) bool {
	for _, h := range rep.Held {
		if h.ID == id {
			return true
		}
	}
	return false
}

func (rep *Report) heldErr(id, socket string) string {
	for _, h := range rep.Held {
		if h.ID == id && h.Socket == socket && h.Err != "" {
			return h.Err
		}
	}
	return "no requests"
}

func secs(xs []float64) string {
	var s []string
	for _, x := range xs {
		s = append(s, fmt.Sprintf("%.3f", x))
	}
	return strings.Join(s, ", ")
}

// markdown20 renders issue 20's tables.
func (rep *Report) markdown20(b *strings.Builder) {
	if len(rep.Held) > 0 {
		b.WriteString("Issue 20: a client at each locker (a new TCP connection and one GET /healthz per request), during lxcfleet updates through its agent, on a fleet lxcfleet provisioned itself (busybox, node under tini, host network), once with today's sockets (`[provision] socket = \"app\"`: the app binds its port) and once with held sockets (`socket = \"held\"`: the holder keeps each socket, the app gets it at fd 3). One fleet at a time, the main fleet stopped. Requests counted from the command's start to the window's end (every locker has answered the target build); a request fails when refused, reset (or closed unanswered), or not answered within the client's timeout.\n\n")
		b.WriteString("| scenario | socket | lockers | requests | failed | refused / reset / timed out / other | latency p50 / p99 / max ms | window s (command s) | lockers started | per locker: stopping → starting, starting → healthy s (p50 / max) | CPU % of one core: box / lockers / agent / holder / clients |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, h := range rep.Held {
			if h.Err != "" && h.Clients.Requests == 0 {
				fmt.Fprintf(b, "| %s | %s | %d | error: %s ||||||\n", h.Title, h.Socket, h.N, h.Err)
				continue
			}
			c := h.Clients
			fmt.Fprintf(b, "| %s %s → %s | %s%s | %d | %d | %d | %d / %d / %d / %d | %.0f / %.0f / %.0f | %.1f (%.1f)%s | %d | %.2f / %.2f, %.2f / %.2f | %.0f / %.0f / %.0f / %.0f / %.0f |\n", h.Title, h.From, h.To, h.Socket, policyNote(h)+boostNote(h.StartCPUWeight), h.N, c.Requests, c.Failed(), c.Refused, c.Reset, c.TimedOut, c.Other,
				c.P50ms, c.P99ms, c.MaxMs, h.WindowSeconds, h.CommandSeconds, map[bool]string{true: " timed out", false: ""}[h.TimedOut], h.Restarted,
				h.StopToStartP50, h.StopToStartMax, h.StartToHealthyP50, h.StartToHealthyMax, h.CPU.Box, h.CPU.Lockers, h.CPU.Agent, h.CPU.Holder, h.CPU.Bench)
		}
		b.WriteString("\n")
		for _, h := range rep.Held {
			if h.Clients.Requests == 0 {
				continue
			}
			i, e := h.InRestart, h.Elsewhere
			fmt.Fprintf(b, "Scenario %s (%s sockets), its requests split: %d sent to a locker while it restarted (stopping → healthy): %d failed, latency p50 / p99 / max %.0f / %.0f / %.0f ms; %d sent to a locker not restarting: %d failed, %.0f / %.0f / %.0f ms.  \n",
				h.ID, h.Socket, i.Requests, i.Failed(), i.P50ms, i.P99ms, i.MaxMs, e.Requests, e.Failed(), e.P50ms, e.P99ms, e.MaxMs)
		}
		for _, a := range rep.HeldAlone {
			if a.Err != "" {
				fmt.Fprintf(b, "One locker restarted alone (%s sockets): not measured: %s.  \n", a.Socket, a.Err)
				continue
			}
			load := "fleet idle"
			if a.UnderTraffic {
				load = "a client at every other locker, as in the update"
			}
			fmt.Fprintf(b, "One locker restarted alone (%s sockets, %s, no agent; lxcctl stop then the agent's start verb, to a new connection answered): %s s, median %.3f s (the stop call alone: %s s).  \n", a.Socket, load, secs(a.Seconds), a.Median, secs(a.StopSeconds))
		}
		b.WriteString("\n")
	}
	if d := rep.Density; d != nil {
		fmt.Fprintf(b, "Issue 20, density (scenario 8): %d held-socket lockers provisioned by lxcfleet, `[sleep] idle_stop = %q`; their cgroup (a child of the run's parent) limited to %.0f MiB: room for %d awake (N/2) at the app's measured RSS serving, %.0f MiB (VmRSS, median of the restarts alone; by the cgroup's own count a serving locker adds %.1f MiB, the main fleet's use with every locker serving ÷ its N, since the node binary's pages are shared). They are started a quarter at a time, each quarter's idle lockers left to fall asleep before the next; %d (10%%) get a client (a new connection every %s).",
			d.N, d.IdleStop, d.LimitMiB, d.FitAwake, d.AppRSSMiB, d.PerLockerMiB, d.Traffic, fmt.Sprintf("%.0f ms", d.IntervalMs))
		fmt.Fprintf(b, " All %d awake would take %.0f MiB at that RSS (%.0f MiB by the cgroup's count).", d.N, float64(d.N)*d.AppRSSMiB, float64(d.N)*d.PerLockerMiB)
		if d.Err != "" {
			fmt.Fprintf(b, " Error: %s.", d.Err)
		}
		b.WriteString("\n\n| awake / asleep | lockers' memory MiB (limit) | CPU % of one core: lockers / agent / holder | agent / holder RSS MiB | first request to a sleeping locker s (median) | one start alone s (median) | update: window s, lockers started (awake before), asleep after | traffic clients: requests, failed, p99 ms |\n|---|---|---|---|---|---|---|---|\n")
		fmt.Fprintf(b, "| %d / %d | %.0f (%.0f) | %.1f / %.1f / %.1f | %.1f / %.1f | %s (%.3f) | %s (%.3f) | %.1f, %d (%d), %d | %d, %d, %.0f |\n\n",
			d.Awake, d.Asleep, d.MemoryMiB, d.LimitMiB, d.LockersCPU, d.AgentCPU, d.HolderCPU, d.AgentRSSMiB, d.HolderRSSMiB, secs(d.WakeSeconds), d.WakeMedian, secs(d.StartSeconds), d.StartMedian,
			d.UpdateWindow, d.UpdateRestarted, d.UpdateAwake, d.UpdateAsleepThen, d.Clients.Requests, d.Clients.Failed(), d.Clients.P99ms)
	}
}

// policyNote names the limit the update ran under: K for a rolling one
// (", K 1"; W ≤ K), W's first value for an offline one (", W 4": its K is
// all lockers); "" for a report from before they were recorded.
func policyNote(h HeldFigures) string {
	switch {
	case h.MaxUnavailable <= 0:
		return ""
	case h.Strategy != "offline":
		return fmt.Sprintf(", K %d", h.MaxUnavailable)
	case h.MaxStarting > 0:
		return fmt.Sprintf(", W from %d", h.MaxStarting)
	}
	return fmt.Sprintf(", W from %d", h.MaxUnavailable)
}

// aloneNote names the held fleet's restart alone (lxcctl, no agent) for
// comparison with the agent's start job, when it was measured.
func (rep *Report) aloneNote() string {
	if a := rep.heldAlone(provision.SocketHeld); a != nil {
		return fmt.Sprintf("; beside it, one held locker restarted alone without the agent (lxcctl stop, start, a queued request answered): %.3f s", a.Median)
	}
	return ""
}

// boostNote names a fleet's startup CPU boost in the socket column.
func boostNote(w int) string {
	if w == 0 {
		return " (no start boost)"
	}
	return fmt.Sprintf(" (start boost %d)", w)
}
