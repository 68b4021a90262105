// Command mutants is the rollout policy's mutation check (make mutants):
// it breaks each rule of the policy on purpose, one at a time, through
// `go test -overlay` (the tree is never written), runs the package's fast
// tests, and fails unless every mutant makes a test fail. Each mutant
// names the rule it breaks; a mutant whose text no longer matches the
// source exactly once is an error too (keep the list in step with the
// code).
//
//	go run ./internal/mutants [-run REGEXP] [-v]
package main
