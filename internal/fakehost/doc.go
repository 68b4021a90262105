// Package fakehost is an in-memory host of lockers and releases for the
// rollout executor's table tests: it implements rollout.Host,
// rollout.Releases and rollout.Clock, lets each release misbehave (fail at
// start, die or turn unhealthy some checks after its first healthy one),
// and measures what the invariants are about: the most lockers down at
// once because of the run, where current points, which releases were
// marked. Real-LXC tests of the same paths live in agent.
package fakehost
