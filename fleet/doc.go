// Package fleet coordinates updates across many lxcfleet hosts through
// etcd (go.etcd.io/etcd/client/v3 and its concurrency package). A host
// without [fleet] endpoints never imports a byte of it at run time: the
// agent makes no Member, dials nothing, and updates on its own as before.
//
// # Keys (one group; prefix default "/lxcfleet")
//
//	<prefix>/<group>/hosts/<host-id>          HostRecord (JSON), under the host's session lease
//	<prefix>/<group>/channel                  Channel (JSON): release {ref, commit}, policy, paused; no lease
//	<prefix>/<group>/sem/slot/<nnnn>          Holder (JSON), nnnn = 0000..K-1, under the holder's session lease
//	<prefix>/<group>/sem/start/<time>-<host>  Start (JSON): one per update started while max_per_period is set, under its own lease of TTL period
//	<prefix>/<group>/results/<commit>/<host>  Result (JSON): a host's outcome on that release; no lease
//
// # How a host follows its channel
//
// Each agent (Member.Run) keeps a session (a lease of TTL, renewed every
// TTL/3 by single keep-alives, see "Fencing" below) and registers its host
// under it: id, lxcfleet version,
// current build and commit, lockers by state, last job and its outcome, and
// its fleet state (idle, waiting, updating, failed) with the reason. It
// watches the group's keys and, on every change and every 2 s, reads the
// channel, the slots, the starts and the results at one revision and
// decides with the pure function Decide: take a slot, update with the slot
// it holds, release it, keep it, or wait (the reason is in the registry).
// An update is the agent's own update-code job to the release's commit
// (journaled, never overlapping another job, with the host's rolling
// policy and its rollback). Then it reports, in one transaction fenced on
// its slot: success writes its result and frees the slot; failure writes
// its result and keeps the slot, marked failed, and the channel is paused
// once max_failed_hosts hosts failed on the release.
//
// # The host's own journal (Config.StateFile, <state_dir>/fleet.json)
//
// An update's outcome is written to the host's journal (fsynced) before
// etcd is told. Until etcd has it (the result, the slot's FAILED mark, the
// pause it implies), the host retries at every step and decides nothing
// else: an outage of any length, or an agent restart, forgets no failure.
// The journal also lists the releases the host failed on (it never takes
// one again, whatever etcd says), and its last session lease.
//
// # Sessions across outages and restarts
//
// A new session first tries to adopt the host's previous lease (this
// process's, ended here by an outage, or a crashed agent's, from the
// journal): if etcd still holds it, the host keeps its registry entry and
// its slot (with its FAILED mark) and follows the channel again at once.
// etcd extends every lease by its TTL when a new leader is elected, so
// after a quorum loss the leases of hosts that were alive survive. If the
// lease is gone (etcd answered: not found), its keys went with it and the
// host starts a new session; the log says "lease expired", not "etcd
// unreachable", which is kept for etcd not answering (naming the
// endpoints).
//
// # Fencing of the work
//
// The host knows by its own clock until when etcd surely holds its lease:
// the send time of the last answered keep-alive plus the TTL granted (etcd
// expires a lease TTL after it received the keep-alive, never earlier, and
// never renews an expired one). The context given to Updater.Update is
// cancelled with a cause wrapping ErrLeaseLost when that deadline passes
// (etcd unreachable, the process frozen), when etcd says the lease is
// gone, or when the slot key is deleted or re-created by someone else (a
// watch). CheckHold(ctx) compares the deadline with the clock at the call,
// so a job resumed from SIGSTOP sees it before its first step even if the
// context's cancellation has not run yet. The agent's update job asks it
// before every decision that may begin a locker move (rollout.Env.Fence),
// and the agent cancels the job with the cause as soon as the context
// says so; the job ends cancelled, launching nothing more, and that
// outcome is not a result on the release. Bound: no locker move begins
// after etcd may have given the slot to another host; a move already
// begun finishes (one locker's stop and start, up to its first health
// check), and an unproven current goes back (I2). A monitor window the
// fence cuts does not count a locker failed on a check that timed out
// only because the process was frozen through it: the locker is checked
// once more at the cut.
//
// Measured with real agents (TestFleetAcceptance, make fleet-acceptance:
// 4 agents, 3 lockers each moved one at a time, TTL 5 s, 3-member etcd;
// fleet/REPORT.md): SIGSTOP of the holder past the TTL, 20 of 20 runs:
// no move begun without a slot; the woken job ended 28–227 ms after
// SIGCONT; in 5 runs a start issued just before the freeze was seen
// healthy 7–183 ms after SIGCONT, so its step overlapped the next
// holder's move by up to 275 ms. The holder cut off from etcd, 10 of 10:
// its job stopped on its own deadline 0.5–2.3 s before etcd freed its
// slot; no overlap.
//
// # Invariants, and where each rule comes from
//
//   - At most K hosts hold a slot, so at most K update at once. A slot is
//     taken in one transaction that puts the slot key under the taker's
//     lease only if the slot key does not exist AND nothing under sem/
//     (slots, starts), the channel (K, pause) or the release's results
//     changed since the revision the decision read (a prefix compare on mod
//     revisions). Racing hosts cannot both win, and a lower K at run time
//     takes effect for every new slot (FleetLock's counting semaphore; K
//     lives in etcd and can change, unlike airlock's, frozen at first
//     init). Tested: the hosts' own job records never overlap more than K.
//   - A dead host frees its slot: the slot key is bound to the holder's
//     lease, which expires TTL after the last keep-alive (SIGKILL, a hung
//     process under SIGSTOP, a lost network). FleetLock's implementations
//     (airlock, poseidon/fleetlock) keep a dead holder's slot forever;
//     kured's --lock-ttl is off by default. Default TTL 30 s.
//   - A live host whose update failed keeps its slot (host dead is not
//     release bad) and pauses the channel after max_failed_hosts failures
//     (default 1), also when etcd was down as it failed (the journal). Nothing starts on a paused channel, nor on a release
//     with max_failed_hosts failed results (a second guard, read by every
//     host). A host never retries a release it failed on. (Nebraska's
//     safe mode pauses a rollout when updates fail or time out.)
//   - Safe mode: while no host has succeeded on the release, K is 1 (the
//     first host is a canary, alone). (Nebraska's safe mode.)
//   - Max updates per period: a slot is taken only while fewer than
//     max_per_period start records exist (Nebraska's "max updates per
//     period"), counted across releases. Each start record lives under its
//     own lease of TTL period, so etcd deletes it when the period has
//     passed, by etcd's clock: a host whose clock is ahead or behind cannot
//     exceed the limit, nor delete anyone's records. Starts are recorded
//     only while a limit is set; a period changed at run time applies to
//     the starts made after the change.
//   - Update windows: with windows set, a host takes a slot only within
//     window_duration after one of their cron times, read in the
//     channel's time_zone (kured's reboot days and times, zincati's
//     maintenance windows, Nebraska's office hours); a held slot goes on.
//   - Update timeout: an update past update_timeout counts as failed at
//     once (result, FAILED mark, pause), even if its job hangs for good;
//     the job is told ErrUpdateTimeout (Nebraska counts an update that
//     does not report in time as failed).
//   - Publish --if-release: the write compares the channel's release with
//     the one the operator saw, so of two publishes moments apart the
//     second is refused (ErrReleaseChanged, HTTP 409), not silently won.
//   - Phased rollout: throttling rises linearly from phase_start at
//     publication to 1 after phase_duration; a host takes the release once
//     hash(host id, commit) <= throttling (Fedora CoreOS's rollouts in
//     Cincinnati: the rate needs no coordination).
//   - Locking is re-entrant per host id: a host that holds a slot (from
//     this session, or from an earlier one whose lease has not yet expired:
//     the agent restarted) keeps it, by adopting that lease; a slot under
//     another lease of the host is moved to the new lease in a transaction
//     fenced on the slot's create revision (FleetLock's recursive locking).
//   - A host id belongs to one live session: the registry entry is
//     written only if absent or already under the writer's lease, and a
//     host takes no slot before it registered. Two agents configured with
//     one id (cloned machines with one hostname) would otherwise share
//     slots through re-entrancy; the second waits, and says why. An agent
//     restarted without revoking its lease adopts it (its journal names
//     it), so it does not wait for its own previous session.
//   - Every write that depends on holding a slot (the report that frees
//     it or marks it failed, the pause after a failure) is a transaction
//     comparing the slot key's create revision with the holder's: a host
//     whose slot expired or was unlocked changes nothing that belongs to
//     the new holder. Its result is still written (it is the host's own
//     record). The pause after a failure is fenced on the slot, or, once
//     the slot went with its lease in an outage, on the channel being
//     unchanged since the update began (no operator acted on it).
//   - Operators force-unlock by holder id, never by slot name: Unlock
//     deletes only the slot that host holds, compared on its create
//     revision (Deployer reverted an auto-unlock on failure because it let
//     a second deploy break the first: release a lock by its owner).
//   - etcd unreachable: the host starts no update (it cannot hold a slot),
//     keeps its lockers as they are, and says so (Status.Connected, the
//     registry note once back, one log line per change, the metric
//     lxcfleet_fleet_etcd_connected). A job already running is told when
//     its lease's deadline passes (see Fencing) and begins no new move.
//   - Publish checks the commit on the origin before writing: a commit the
//     origin lacks, or REF --commit ID where REF is not ID there, is bad
//     input (exit 2, HTTP 400) and the channel is untouched.
//
// # Defaults
//
// group "default", host id the hostname, TTL 30 s, prefix "/lxcfleet",
// K (max_hosts) 1, no per-period limit (period 1 h when one is set), no
// phasing, no safe mode, max_failed_hosts 1. A channel keeps its policy
// across publishes unless the publish sets one; publishing does not
// resume a paused channel.
//
// Operators use Store (the CLI's `lxcfleet fleet ...` and the agent's
// /v1/fleet routes): Hosts, Channel, Publish, SetPolicy, Pause, Resume,
// Holders, Unlock, Results.
package fleet
