// Command lxcfleet is the host agent and operator CLI for an LXC host that
// runs many near-identical app containers ("lockers") from one shared code
// tree. This package holds only flags, subcommands and output (human text,
// --json, progress bars); the work lives in lxcctl, mounts, codeupdate and
// agent.
//
// Exit codes: 0 success, 1 when any container (or the operation) failed, 2
// for bad input (unknown flags or containers, invalid values).
package main
