// Package npmregistry is an npm registry for the tests: a small in-process
// HTTP server on 127.0.0.1 that speaks the protocol the real npm client
// uses to install (packuments, full and abbreviated, with scoped names;
// tarballs with their sha512 integrity and sha1 shasum), serving the
// packages in testdata/packages from memory.
//
// The tarballs are checked in (made with `npm pack` from testdata/src, see
// testdata/README.md) so that their integrity never changes: lockfiles in
// the tests' fixtures record it. Use points every npm of a test binary at
// one shared registry and a private cache; Start gives one test a registry
// of its own, which Hang makes stall and Close takes down; Unreachable is
// an address where no registry answers.
package npmregistry
