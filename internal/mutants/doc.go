// Command mutants is the mutation check (make mutants) of the rollout
// policy and of the host lock: it breaks each rule on purpose, one rule
// per mutant, through `go test -overlay` (the tree is never written), runs
// the rollout package's fast tests (or, for a mutant elsewhere, the one
// test named in testsFor), and fails unless every mutant makes a test
// fail. Each mutant is its own go test with its own overlay, so -j of them
// (default: one per CPU) run at once; the build cache shares what they do
// not change. -lockers none leaves out the few mutants whose tests run
// real lockers (lockerTests), -lockers only runs just those: make test runs
// the first kind beside the package tests, at idle CPU priority, and the
// second after them. Each mutant names the rule it breaks; a mutant whose
// text no longer matches the source exactly once is an error too (keep the
// list in step with the code).
//
//	go run ./internal/mutants [-run REGEXP] [-v] [-j N] [-lockers all|none|only]
package main
