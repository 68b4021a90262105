// Package downtime serves lxcfleet's maintenance page: an HTTP 503 with a
// Retry-After header and the expected end of the maintenance, for a proxy
// to show in place of a locker's 502/503 (see
// packaging/nginx-lxcfleet-downtime.conf), and a Holder that answers with
// that page on a stopped locker's own host port while an offline update
// keeps it down, so that its users see "back at 14:05" rather than
// "connection refused".
package downtime
