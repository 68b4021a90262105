// Command lockerbench runs lxcfleet's benchmark (see package lxcfleet/bench):
//
//	lockerbench run [-n 300] [-out results] [-lxcfleet bin/lxcfleet]
//	lockerbench scale [-n 50,100,300]  # one cheap run per N: window, agent RSS and CPU against N
//	lockerbench clean    # containers a run killed with SIGKILL left behind
//
// It also has the subcommands the benchmark runs as separate processes:
// `probe` (the external prober), `agent` and `update-code` (in-process
// stand-ins used while the lxcfleet binary lacks those commands), and the
// hidden forkstart subcommand lxcctl re-executes to start containers.
package main
