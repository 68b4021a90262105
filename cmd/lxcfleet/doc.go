// Command lxcfleet is the host agent and operator CLI for an LXC host that
// runs many near-identical app containers ("lockers") from one shared code
// tree. This package holds only flags, subcommands and output (human text,
// --json, progress bars), the service glue, and the one wiring (wiring.go)
// that reads the config and builds the layout, the container host, the
// release manager, the provisioner and the agent for every command and the
// daemon; the work lives in lxcctl, mounts, codeupdate, provision and agent.
//
// Exit codes: 0 success, 1 when any container (or the operation) failed, 2
// for bad input (unknown commands, flags or containers, wrong arguments,
// invalid values).
package main
