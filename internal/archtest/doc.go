// Package archtest holds the test that keeps lxcfleet's import rules: only
// lxcctl imports go-lxc, only codeupdate imports go-git, and only cmd
// imports cobra.
package archtest
