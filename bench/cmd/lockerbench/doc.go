// Command lockerbench runs lxcfleet's benchmark (see package lxcfleet/bench):
//
//	lockerbench run [-n 300] [-out results] [-lxcfleet bin/lxcfleet]
//
// It also has the subcommands the benchmark runs as separate processes:
// `probe` (the external prober) and `agent` (the in-process agent, used when
// the lxcfleet binary has no agent command), and the hidden forkstart
// subcommand lxcctl re-executes to start containers.
package main
