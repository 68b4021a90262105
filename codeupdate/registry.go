package codeupdate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrRegistryUnreachable means npm could not fetch from its registry
// (refused, no answer within Options.FetchStallTimeout, name not
// resolving, a 502/503/504): the error names the registry and the packages
// npm could not fetch. Everything npm had in the host's cache was taken
// from there (npm runs with prefer-offline), so an update whose packages
// are all cached never sees this error.
var ErrRegistryUnreachable = errors.New("npm registry unreachable")

// npmNetworkCodes are npm's error codes ("npm error code X") that mean the
// registry did not answer.
var npmNetworkCodes = []string{
	"ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ECONNRESET", "EHOSTUNREACH",
	"ENETUNREACH", "EPIPE", "ERR_SOCKET_TIMEOUT", "FETCH_ERROR", "E502", "E503", "E504",
}

var (
	npmCodeRE = regexp.MustCompile(`(?m)^npm (?:error|ERR!) code (\S+)`)
	// npm names the URL it failed on: "request to URL failed",
	// "network timeout at: URL", "503 Service Unavailable - GET URL".
	npmFailedURLRE = regexp.MustCompile(`(?:request to|timeout at:|GET) (https?://[^\s,]+)`)
)

// registryFailure reads npm's output of a failed run in dir and, when the
// cause is an unreachable registry, returns the error that says so: the
// registry npm used and the packages it could not fetch (name@version
// from dir's lockfile where it names one version). Otherwise it returns
// nil.
func (m *Manager) registryFailure(ctx context.Context, dir, out string) error {
	code := ""
	if mm := npmCodeRE.FindStringSubmatch(out); mm != nil {
		code = mm[1]
	}
	if !slices.Contains(npmNetworkCodes, code) {
		return nil
	}
	reg := m.npmRegistry(ctx, dir)
	var pkgs []string
	for _, mm := range npmFailedURLRE.FindAllStringSubmatch(out, -1) {
		if reg == "" {
			if u, err := url.Parse(mm[1]); err == nil {
				reg = u.Scheme + "://" + u.Host + "/"
			}
		}
		if p := packageOfURL(mm[1], reg, dir); p != "" && !slices.Contains(pkgs, p) {
			pkgs = append(pkgs, p)
		}
	}
	what := "packages"
	if len(pkgs) > 0 {
		what = strings.Join(pkgs, ", ")
	}
	return fmt.Errorf("%w: %s (could not fetch %s; npm error %s)", ErrRegistryUnreachable, reg, what, code)
}

// npmRegistry returns the registry npm uses in dir (Options.NpmRegistry,
// else what npm says: its .npmrc, the environment, the user's config), ""
// when npm cannot say.
func (m *Manager) npmRegistry(ctx context.Context, dir string) string {
	if m.registry != "" {
		return m.registry
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.npm, "config", "get", "registry")
	cmd.Dir = dir
	cmd.Env = m.npmEnv()
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// packageOfURL names the package a registry URL is for: "name@version"
// for a tarball, "name" (with its version from dir's lockfile when the
// lockfile holds one version of it) for a packument.
func packageOfURL(raw, reg, dir string) string {
	p := raw
	if reg != "" && strings.HasPrefix(raw, strings.TrimSuffix(reg, "/")+"/") {
		p = strings.TrimPrefix(raw, strings.TrimSuffix(reg, "/")+"/")
	} else if u, err := url.Parse(raw); err == nil {
		p = strings.TrimPrefix(u.EscapedPath(), "/")
	}
	if s, err := url.PathUnescape(p); err == nil {
		p = s
	}
	if name, file, ok := strings.Cut(p, "/-/"); ok {
		base := name[strings.LastIndex(name, "/")+1:]
		if v, ok := strings.CutPrefix(strings.TrimSuffix(file, ".tgz"), base+"-"); ok {
			return name + "@" + v
		}
		return name
	}
	if p == "" {
		return ""
	}
	if v := lockedVersion(dir, p); v != "" {
		return p + "@" + v
	}
	return p
}

// lockedVersion returns the one version of name dir's lockfile holds, ""
// when it holds none or several.
func lockedVersion(dir, name string) string {
	lock, _, err := lockfile(dir)
	if err != nil || lock == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(dir, lock))
	if err != nil {
		return ""
	}
	var l struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if json.Unmarshal(b, &l) != nil {
		return ""
	}
	v := ""
	for k, p := range l.Packages {
		if k == "node_modules/"+name || strings.HasSuffix(k, "/node_modules/"+name) {
			if v != "" && v != p.Version {
				return ""
			}
			v = p.Version
		}
	}
	return v
}

// npmFetchEnv is npm's config for fetching: the host's cache first
// (prefer-offline: a package in the cache is not asked for again), and a
// request the registry does not answer within the stall timeout fails the
// run, without a retry; Options.NpmRegistry when set (what is cached needs no registry, and a retry
// would double the wait of a build whose registry is down).
func (m *Manager) npmFetchEnv() []string {
	env := []string{
		"npm_config_prefer_offline=true",
		"npm_config_fetch_timeout=" + strconv.FormatInt(m.stall.Milliseconds(), 10),
		"npm_config_fetch_retries=0",
	}
	if m.registry != "" {
		env = append(env, "npm_config_registry="+m.registry)
	}
	return env
}
