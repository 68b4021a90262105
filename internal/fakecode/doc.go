// Package fakecode is the one release manager in memory for the tests: it
// has the agent's Code methods (codeupdate.Manager's), so that the agent's
// planning tests and the console's browser tests run without a git origin
// and npm. The real manager is tested in codeupdate and end to end.
//
// New makes releases named by their targets ("2-new"), for the agent's
// planning tests; NewBuilds makes numbered releases ("3-03c0ffee0000")
// with commit details, as the console shows them. Both also play the
// agent's ReleaseOf: a locker's init pid runs the release that was current
// when it was first asked about (or the one Pin says).
package fakecode
