// Package provision makes and adopts lockers: it creates a locker's
// container from an LXC template, its Me and Config folders (owned by the
// container's mapped root), its mount entries for the layout, its init and
// its port, and checks existing lockers against the layout. It runs no
// jobs and knows nothing of the agent.
package provision
