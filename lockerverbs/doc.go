// Package lockerverbs adapts lxcctl's per-container verbs to the rollout
// executor (rollout.Host), and gives tests and the benchmark two bulk
// helpers, StartAll and StopAll, that are rollout plans too: the bounded
// window exists once, in rollout.
package lockerverbs
