// Package fakehost is an in-memory host of lockers and releases for the
// rollout executor's table and property tests: it implements
// rollout.Host, rollout.Releases and rollout.Clock, lets each release
// misbehave (Behave: fail at start, die or turn unhealthy some checks
// after its first healthy one) and each locker on a release too (Script:
// its stop fails or kills, its start or stop takes time, its n-th check
// fails), puts lockers where a dead agent left them (Starting), records
// every verb it ran per locker (History), and measures what the
// invariants are about: the most lockers down at once because of the run
// (MaxDown; MaxOver counts stopped lockers the run starts as holding
// places), where current points, which releases were marked.
//
// Its clock is virtual: by default Sleep and slow starts move it on at
// once; after UseTime it is the time package's, which under
// testing/synctest is virtual too and advances as soon as every goroutine
// of the bubble waits, so that concurrent starts and stops of different
// lengths interleave as they would in real time, deterministically in
// time and without waiting. Real-LXC tests of the same paths live in
// agent.
package fakehost
