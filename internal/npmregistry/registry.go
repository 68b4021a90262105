package npmregistry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha1"
	"crypto/sha512"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed testdata/packages/*.tgz
var packagesFS embed.FS

// published is the time every package claims to have been published at
// (the packument's "time" field).
var published = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)

// AbbreviatedType is the media type of the abbreviated packument ("corgi")
// npm asks for when it installs.
const AbbreviatedType = "application/vnd.npm.install-v1+json"

// version is one published version of a package.
type version struct {
	manifest  map[string]any // the tarball's package.json
	tgz       []byte
	integrity string // sha512-<base64>
	shasum    string // sha1 hex
}

// Registry is an npm registry serving the packages under testdata/packages
// (and any added with Add) from memory on 127.0.0.1.
type Registry struct {
	// URL is the registry's address with a trailing slash, as npm's
	// registry config wants it: http://127.0.0.1:<port>/.
	URL string

	ln  net.Listener
	srv *http.Server

	mu       sync.Mutex
	pkgs     map[string]map[string]*version // name -> version -> tarball
	requests []string
	hang     bool
	closed   chan struct{}
}

// New starts a registry on a free port of 127.0.0.1 serving the packages
// in testdata/packages. Close stops it.
func New() (*Registry, error) {
	r := &Registry{pkgs: map[string]map[string]*version{}, closed: make(chan struct{})}
	files, err := fs.Glob(packagesFS, "testdata/packages/*.tgz")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := packagesFS.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		if err := r.AddTarball(b); err != nil {
			return nil, fmt.Errorf("adding %s: %w", f, err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening for the test npm registry: %w", err)
	}
	r.ln = ln
	r.URL = "http://" + ln.Addr().String() + "/"
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 10 * time.Second}
	go r.srv.Serve(ln)
	return r, nil
}

// Close stops the server: from then on its port refuses connections (a
// registry that is down, at the address npm knows it by). Safe to call
// twice.
func (r *Registry) Close() error {
	r.mu.Lock()
	select {
	case <-r.closed:
	default:
		close(r.closed)
	}
	r.mu.Unlock()
	return r.srv.Close()
}

// Hang makes the registry accept requests and never answer them (a
// registry that stalls) until Close.
func (r *Registry) Hang() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hang = true
}

// AddTarball publishes a package tarball (as `npm pack` makes it: the
// files under package/, with package/package.json naming the package and
// its version).
func (r *Registry) AddTarball(tgz []byte) error {
	pj, err := packageJSON(tgz)
	if err != nil {
		return err
	}
	var man map[string]any
	if err := json.Unmarshal(pj, &man); err != nil {
		return fmt.Errorf("parsing package.json: %w", err)
	}
	name, _ := man["name"].(string)
	ver, _ := man["version"].(string)
	if name == "" || ver == "" {
		return errors.New("package.json has no name or version")
	}
	s512 := sha512.Sum512(tgz)
	s1 := sha1.Sum(tgz)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pkgs[name] == nil {
		r.pkgs[name] = map[string]*version{}
	}
	r.pkgs[name][ver] = &version{
		manifest:  man,
		tgz:       tgz,
		integrity: "sha512-" + base64.StdEncoding.EncodeToString(s512[:]),
		shasum:    hex.EncodeToString(s1[:]),
	}
	return nil
}

// Integrity returns the sha512 integrity (SRI) of name@ver's tarball, ""
// when the registry does not have it.
func (r *Registry) Integrity(name, ver string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if v := r.pkgs[name][ver]; v != nil {
		return v.integrity
	}
	return ""
}

// Requests returns the paths requested so far ("GET /ms"), oldest first.
func (r *Registry) Requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

// packageJSON returns package/package.json of a gzipped tarball.
func packageJSON(tgz []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return nil, fmt.Errorf("reading tarball: %w", err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, errors.New("tarball has no package/package.json")
		}
		if err != nil {
			return nil, fmt.Errorf("reading tarball: %w", err)
		}
		// npm pack puts everything under package/; some tarballs use another
		// top folder, which npm accepts too.
		if _, rest, ok := strings.Cut(h.Name, "/"); ok && rest == "package.json" {
			return io.ReadAll(tr)
		}
	}
}

// ServeHTTP answers the two requests an install makes: GET /<name> (the
// packument; abbreviated when the client accepts AbbreviatedType) and GET
// /<name>/-/<base>-<version>.tgz (the tarball). Scoped names come as
// /@scope%2fname or /@scope/name.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests = append(r.requests, req.Method+" "+req.URL.EscapedPath())
	hang := r.hang
	r.mu.Unlock()
	if hang {
		select {
		case <-req.Context().Done():
		case <-r.closed:
		}
		return
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		notFound(w)
		return
	}
	p, err := url.PathUnescape(req.URL.EscapedPath())
	if err != nil {
		notFound(w)
		return
	}
	p = strings.TrimPrefix(p, "/")
	if name, file, ok := strings.Cut(p, "/-/"); ok {
		r.serveTarball(w, name, file)
		return
	}
	r.servePackument(w, req, p)
}

func notFound(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusNotFound)
	io.WriteString(w, `{"error":"Not found"}`+"\n")
}

func (r *Registry) serveTarball(w http.ResponseWriter, name, file string) {
	r.mu.Lock()
	var v *version
	for ver, vv := range r.pkgs[name] {
		if file == path.Base(name)+"-"+ver+".tgz" {
			v = vv
		}
	}
	r.mu.Unlock()
	if v == nil {
		notFound(w)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(v.tgz)))
	w.Write(v.tgz)
}

// abbreviatedFields are the manifest fields the abbreviated packument
// keeps (npm's registry documentation, "Abbreviated version object").
var abbreviatedFields = []string{
	"name", "version", "deprecated", "dependencies", "optionalDependencies", "devDependencies",
	"bundleDependencies", "peerDependencies", "peerDependenciesMeta", "bin", "directories",
	"engines", "os", "cpu", "_hasShrinkwrap", "hasInstallScript",
}

func (r *Registry) servePackument(w http.ResponseWriter, req *http.Request, name string) {
	abbreviated := strings.Contains(req.Header.Get("Accept"), AbbreviatedType)
	r.mu.Lock()
	vers := r.pkgs[name]
	versions := map[string]any{}
	times := map[string]string{"created": published, "modified": published}
	var latest string
	for ver, v := range vers {
		dist := map[string]any{
			"tarball":   strings.TrimSuffix(r.URL, "/") + "/" + name + "/-/" + path.Base(name) + "-" + ver + ".tgz",
			"integrity": v.integrity,
			"shasum":    v.shasum,
		}
		m := map[string]any{}
		if abbreviated {
			for _, f := range abbreviatedFields {
				if x, ok := v.manifest[f]; ok {
					m[f] = x
				}
			}
			if hasInstallScript(v.manifest) {
				m["hasInstallScript"] = true
			}
		} else {
			for k, x := range v.manifest {
				m[k] = x
			}
			m["_id"] = name + "@" + ver
		}
		m["dist"] = dist
		versions[ver] = m
		times[ver] = published
		if latest == "" || semverLess(latest, ver) {
			latest = ver
		}
	}
	r.mu.Unlock()
	if len(versions) == 0 {
		notFound(w)
		return
	}
	doc := map[string]any{
		"name":      name,
		"dist-tags": map[string]string{"latest": latest},
		"versions":  versions,
	}
	if abbreviated {
		doc["modified"] = published
		w.Header().Set("Content-Type", AbbreviatedType)
	} else {
		doc["_id"] = name
		doc["time"] = times
		w.Header().Set("Content-Type", "application/json")
	}
	json.NewEncoder(w).Encode(doc)
}

// hasInstallScript reports whether a manifest has an install script
// (npm's abbreviated packument flags it so that npm knows before it
// fetches the tarball).
func hasInstallScript(man map[string]any) bool {
	s, _ := man["scripts"].(map[string]any)
	for _, k := range []string{"preinstall", "install", "postinstall"} {
		if _, ok := s[k]; ok {
			return true
		}
	}
	return false
}

// semverLess compares two release versions major.minor.patch numerically
// (pre-release versions sort before their release, by string).
func semverLess(a, b string) bool {
	ac, apre, _ := strings.Cut(a, "-")
	bc, bpre, _ := strings.Cut(b, "-")
	as, bs := strings.Split(ac, "."), strings.Split(bc, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		x, _ := strconv.Atoi(as[i])
		y, _ := strconv.Atoi(bs[i])
		if x != y {
			return x < y
		}
	}
	if len(as) != len(bs) {
		return len(as) < len(bs)
	}
	switch {
	case apre == bpre:
		return false
	case apre == "":
		return false
	case bpre == "":
		return true
	}
	return apre < bpre
}
