package lxcctl

import (
	"context"
	"fmt"
	"strings"
	"time"

	lxc "github.com/lxc/go-lxc"
)

// Create makes a new container from an LXC template (for example "busybox"
// or "download") with the template's extra arguments. The container must
// not exist yet. On failure nothing of the container is left behind.
func (h *Host) Create(ctx context.Context, name, template string, args ...string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c, err := lxc.NewContainer(name, h.lxcpath)
	if err != nil {
		return fmt.Errorf("creating container %q: %s", name, err)
	}
	defer c.Release()
	if c.Defined() {
		return fmt.Errorf("creating container %q in %s: it already exists", name, h.lxcpath)
	}
	c.SetVerbosity(lxc.Quiet)
	opts := lxc.TemplateOptions{Template: template, ExtraArgs: args}
	if err := c.Create(opts); err != nil {
		if c.Defined() {
			_ = c.Destroy()
		}
		return fmt.Errorf("creating container %q from template %q %s: %s", name, template, strings.Join(args, " "), err)
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
	defer c.Release()
	if err := c.Clone(dst, lxc.CloneOptions{ConfigPath: h.lxcpath, Backend: lxc.Directory}); err != nil {
		return fmt.Errorf("cloning container %q to %q: %s", src, dst, err)
	}
	return nil
}

// Destroy kills a container if it runs and removes it with its rootfs. A
// container that does not exist is not an error.
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
	if err := c.Destroy(); err != nil {
		return fmt.Errorf("destroying container %q: %s", name, err)
	}
	return nil
}
