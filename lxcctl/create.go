package lxcctl

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	lxc "github.com/lxc/go-lxc"
)

// Create makes a new container from an LXC template (for example "busybox"
// or "download") with the template's extra arguments. The container must
// not exist yet. On failure nothing of the container is left behind.
//
// It runs LXC's own lxc-create in a process of its own, not liblxc in this
// one: liblxc forks to run the template, and a fork of this multithreaded
// process can deadlock in the child on a lock another thread held (seen:
// a clone's child stuck in a futex for 16 minutes in a test run); a
// separate process also dies with ctx.
func (h *Host) Create(ctx context.Context, name, template string, args ...string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if h.defined(name) {
		return fmt.Errorf("creating container %q in %s: it already exists", name, h.lxcpath)
	}
	argv := []string{"-P", h.lxcpath, "-n", name, "-t", template}
	if len(args) > 0 {
		argv = append(append(argv, "--"), args...)
	}
	if err := h.lxcTool(ctx, "lxc-create", argv...); err != nil {
		_ = h.Destroy(context.WithoutCancel(ctx), name)
		return fmt.Errorf("creating container %q from template %q %s: %w", name, template, strings.Join(args, " "), err)
	}
	return nil
}

// defined reports whether a container of that name exists.
func (h *Host) defined(name string) bool {
	c, err := lxc.NewContainer(name, h.lxcpath)
	if err != nil {
		return false
	}
	defer c.Release()
	return c.Defined()
}

// lxcTool runs one of LXC's command-line tools and returns its last
// output lines in the error when it fails.
func (h *Host) lxcTool(ctx context.Context, tool string, args ...string) error {
	cmd := exec.CommandContext(ctx, tool, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if lines := strings.Split(msg, "\n"); len(lines) > 5 {
			msg = strings.Join(lines[len(lines)-5:], "\n")
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", tool, ctx.Err())
		}
		return fmt.Errorf("%s: %v: %s", tool, err, msg)
	}
	return nil
}

// Clone copies a stopped container (its config and rootfs) to a new name.
func (h *Host) Clone(ctx context.Context, src, dst string) error {
	if err := ValidName(dst); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := h.open(src)
	if err != nil {
		return err
	}
	_ = c.Release()
	if h.defined(dst) {
		return fmt.Errorf("cloning container %q to %q in %s: %q already exists", src, dst, h.lxcpath, dst)
	}
	// lxc-copy in a process of its own, for the reason Create gives.
	if err := h.lxcTool(ctx, "lxc-copy", "-P", h.lxcpath, "-n", src, "-N", dst, "-B", "dir"); err != nil {
		_ = h.Destroy(context.WithoutCancel(ctx), dst)
		return fmt.Errorf("cloning container %q to %q: %w", src, dst, err)
	}
	return nil
}

// Destroy kills a container if it runs and removes it with its rootfs. A
// container that does not exist is not an error. Once the removal has
// begun it runs to its end, whatever ctx does.
func (h *Host) Destroy(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := lxc.NewContainer(name, h.lxcpath)
	if err != nil {
		return fmt.Errorf("destroying container %q: %s", name, err)
	}
	defer c.Release()
	if !c.Defined() {
		return nil
	}
	if c.Running() {
		if err := c.Stop(); err != nil && c.Running() {
			return fmt.Errorf("killing container %q before destroying it: %s", name, err)
		}
		if err := waitStopped(ctx, c, time.Now().Add(settleTimeout)); err != nil {
			return fmt.Errorf("destroying container %q: %w", name, err)
		}
	}
	// lxc-destroy in a process of its own: for an unprivileged container
	// liblxc forks into its user namespace to remove the rootfs (see
	// Create for why not in this process).
	if err := h.lxcTool(context.WithoutCancel(ctx), "lxc-destroy", "-P", h.lxcpath, "-n", name); err != nil {
		return fmt.Errorf("destroying container %q: %w", name, err)
	}
	return nil
}
