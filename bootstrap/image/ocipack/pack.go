package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	// AnnotationImageName is the index annotation containerd's importer reads
	// to register an image under its full name (containerd images.AnnotationImageName).
	AnnotationImageName = "io.containerd.image.name"

	// DefaultPath is the PATH put into the image config when no Env is given.
	DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

	createdBy = "matrx ocipack: one layer from a root filesystem directory"
)

// Config says what to pack and how to describe it.
type Config struct {
	RootFS string // directory whose contents become the image's /
	Name   string // full reference; ":latest" is added when it has no tag
	Out    string // archive path, written atomically

	Arch       string   // image architecture (GOARCH spelling)
	User       string   // config User, e.g. "1000:1000"
	WorkingDir string   // config WorkingDir
	Env        []string // config Env, KEY=VALUE

	// SourceDate, when set, clamps every mtime in the layer to it and dates
	// the image config, so equal inputs give byte-identical archives.
	SourceDate time.Time
}

// Result describes the written archive.
type Result struct {
	Name, Tag string
	Manifest  digest.Digest
	Config    digest.Digest
	Layer     digest.Digest // digest of the gzip blob
	DiffID    digest.Digest // digest of the uncompressed tar
	LayerSize int64         // gzip bytes
	TarSize   int64         // uncompressed tar bytes
	Entries   int           // tar entries written
	Skipped   []string      // device nodes and sockets left out
}

// Pack writes cfg.RootFS as a single-layer OCI image archive to cfg.Out.
func Pack(ctx context.Context, cfg Config) (Result, error) {
	var res Result
	name, tag, err := parseName(cfg.Name)
	if err != nil {
		return res, err
	}
	res.Name, res.Tag = name, tag
	if cfg.Arch == "" {
		return res, errors.New("architecture is required")
	}
	st, err := os.Stat(cfg.RootFS)
	if err != nil {
		return res, fmt.Errorf("rootfs: %w", err)
	}
	if !st.IsDir() {
		return res, fmt.Errorf("rootfs %s: not a directory", cfg.RootFS)
	}
	outDir := filepath.Dir(cfg.Out)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return res, fmt.Errorf("output directory: %w", err)
	}

	// The layer goes to a temporary file first: its digest, which names it
	// inside the archive, is known only once it is complete.
	layerFile, err := os.CreateTemp(outDir, ".ocipack-layer-*")
	if err != nil {
		return res, fmt.Errorf("layer temp file: %w", err)
	}
	defer func() {
		layerFile.Close()
		os.Remove(layerFile.Name())
	}()
	lw, err := writeLayer(ctx, cfg.RootFS, layerFile, cfg.SourceDate)
	if err != nil {
		return res, fmt.Errorf("layer: %w", err)
	}
	res.Layer, res.DiffID = lw.digest, lw.diffID
	res.LayerSize, res.TarSize = lw.size, lw.tarSize
	res.Entries, res.Skipped = lw.entries, lw.skipped

	var created *time.Time
	if !cfg.SourceDate.IsZero() {
		t := cfg.SourceDate.UTC()
		created = &t
	}
	img := ocispec.Image{
		Created:  created,
		Platform: ocispec.Platform{Architecture: cfg.Arch, OS: "linux"},
		Config: ocispec.ImageConfig{
			User:       cfg.User,
			Env:        cfg.Env,
			WorkingDir: cfg.WorkingDir,
		},
		RootFS:  ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{lw.diffID}},
		History: []ocispec.History{{Created: created, CreatedBy: createdBy}},
	}
	configJSON, err := json.Marshal(img)
	if err != nil {
		return res, err
	}
	configDesc := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageConfig,
		Digest:    digest.FromBytes(configJSON),
		Size:      int64(len(configJSON)),
	}
	res.Config = configDesc.Digest

	manifestJSON, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers: []ocispec.Descriptor{{
			MediaType: ocispec.MediaTypeImageLayerGzip,
			Digest:    lw.digest,
			Size:      lw.size,
		}},
	})
	if err != nil {
		return res, err
	}
	manifestDesc := ocispec.Descriptor{
		MediaType: ocispec.MediaTypeImageManifest,
		Digest:    digest.FromBytes(manifestJSON),
		Size:      int64(len(manifestJSON)),
		Platform:  &ocispec.Platform{Architecture: cfg.Arch, OS: "linux"},
		Annotations: map[string]string{
			AnnotationImageName:       name,
			ocispec.AnnotationRefName: tag,
		},
	}
	res.Manifest = manifestDesc.Digest

	indexJSON, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifestDesc},
	})
	if err != nil {
		return res, err
	}
	layoutJSON, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return res, err
	}

	if _, err := layerFile.Seek(0, io.SeekStart); err != nil {
		return res, err
	}
	err = writeArchive(cfg.Out, cfg.SourceDate, []archiveEntry{
		{name: ocispec.ImageLayoutFile, data: layoutJSON},
		{name: blobPath(configDesc.Digest), data: configJSON},
		{name: blobPath(lw.digest), file: layerFile, size: lw.size},
		{name: blobPath(manifestDesc.Digest), data: manifestJSON},
		{name: ocispec.ImageIndexFile, data: indexJSON},
	})
	if err != nil {
		return res, fmt.Errorf("archive %s: %w", cfg.Out, err)
	}
	return res, nil
}

// parseName returns the full reference containerd should register (with a
// tag, ":latest" when none is given) and the tag alone. Digest references
// are refused: the digest of what we are about to write is not known yet.
func parseName(ref string) (name, tag string, err error) {
	if ref == "" {
		return "", "", errors.New("image name is empty")
	}
	if strings.ContainsAny(ref, "@ \t\r\n") {
		return "", "", fmt.Errorf("image name %q: must be NAME[:TAG] without digest or whitespace", ref)
	}
	repo := ref
	lastSlash := strings.LastIndexByte(ref, '/')
	if i := strings.LastIndexByte(ref, ':'); i > lastSlash {
		repo, tag = ref[:i], ref[i+1:]
		if tag == "" {
			return "", "", fmt.Errorf("image name %q: empty tag", ref)
		}
	} else {
		tag = "latest"
	}
	if repo == "" || strings.HasPrefix(repo, "/") || strings.HasSuffix(repo, "/") || strings.Contains(repo, "//") {
		return "", "", fmt.Errorf("image name %q: bad repository part", ref)
	}
	if strings.ToLower(repo) != repo {
		return "", "", fmt.Errorf("image name %q: repository must be lowercase", ref)
	}
	if len(tag) > 128 || strings.ContainsAny(tag, "/:") {
		return "", "", fmt.Errorf("image name %q: bad tag", ref)
	}
	return repo + ":" + tag, tag, nil
}

func blobPath(d digest.Digest) string {
	return path.Join(ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded())
}

// layerWritten is what writeLayer reports.
type layerWritten struct {
	digest, diffID digest.Digest
	size, tarSize  int64
	entries        int
	skipped        []string
}

// countingHash hashes and counts what is written through it.
type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

func (c *countingHash) digest() digest.Digest {
	return digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(c.h.Sum(nil)))
}

// writeLayer streams root as a gzip-compressed tar into w:
// tar → (diffID hash) → gzip → (blob hash) → w.
func writeLayer(ctx context.Context, root string, w io.Writer, clamp time.Time) (layerWritten, error) {
	var lw layerWritten
	blob := &countingHash{h: sha256.New()}
	buf := bufio.NewWriterSize(io.MultiWriter(w, blob), 1<<20)
	gz := gzip.NewWriter(buf) // no name, no mtime in the header: deterministic
	diff := &countingHash{h: sha256.New()}
	tw := tar.NewWriter(io.MultiWriter(gz, diff))

	entries, skipped, err := writeTree(ctx, root, tw, clamp)
	if err != nil {
		return lw, err
	}
	if err := tw.Close(); err != nil {
		return lw, err
	}
	if err := gz.Close(); err != nil {
		return lw, err
	}
	if err := buf.Flush(); err != nil {
		return lw, err
	}
	lw.digest, lw.size = blob.digest(), blob.n
	lw.diffID, lw.tarSize = diff.digest(), diff.n
	lw.entries, lw.skipped = entries, skipped
	return lw, nil
}

// writeTree writes every entry under root (not root itself) in lexical
// order, with numeric ownership and permission bits as stat reports them.
// Hard links after the first become tar links; device nodes and sockets
// are skipped (the runtime provides /dev); a mount point inside root is an
// error, since its contents do not belong to the image.
func writeTree(ctx context.Context, root string, tw *tar.Writer, clamp time.Time) (int, []string, error) {
	rootInfo, err := os.Lstat(root)
	if err != nil {
		return 0, nil, err
	}
	rootStat, err := statOf(rootInfo)
	if err != nil {
		return 0, nil, err
	}
	var (
		entries int
		skipped []string
		links   = map[[2]uint64]string{} // (dev, ino) → first name
	)
	err = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, err := statOf(fi)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		mtime := fi.ModTime().Truncate(time.Second)
		if !clamp.IsZero() && mtime.After(clamp) {
			mtime = clamp
		}
		hdr := &tar.Header{
			Name:    name,
			Mode:    int64(st.perm),
			Uid:     int(st.uid),
			Gid:     int(st.gid),
			ModTime: mtime.UTC(),
		}
		var content *os.File
		mode := fi.Mode()
		switch {
		case mode.IsDir():
			if st.dev != rootStat.dev {
				return fmt.Errorf("%s: is a mount point; unmount it before packing", name)
			}
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case mode.IsRegular():
			key := [2]uint64{st.dev, st.ino}
			if first, ok := links[key]; ok && st.nlink > 1 {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
				break
			}
			if st.nlink > 1 {
				links[key] = name
			}
			hdr.Typeflag = tar.TypeReg
			hdr.Size = fi.Size()
			if content, err = os.Open(p); err != nil {
				return err
			}
			defer content.Close()
		case mode&os.ModeSymlink != 0:
			hdr.Typeflag = tar.TypeSymlink
			if hdr.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
		case mode&os.ModeNamedPipe != 0:
			hdr.Typeflag = tar.TypeFifo
		case mode&(os.ModeDevice|os.ModeCharDevice|os.ModeSocket) != 0:
			skipped = append(skipped, name)
			return nil
		default:
			return fmt.Errorf("%s: unsupported file type %v", name, mode.Type())
		}
		if hdr.Typeflag != tar.TypeLink {
			xattrs, err := readXattrs(p)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			for k, v := range xattrs {
				if hdr.PAXRecords == nil {
					hdr.PAXRecords = map[string]string{}
				}
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		entries++
		if content != nil {
			n, err := io.Copy(tw, content)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if n != hdr.Size {
				return fmt.Errorf("%s: changed while packing (%d of %d bytes)", name, n, hdr.Size)
			}
		}
		return nil
	})
	return entries, skipped, err
}

// archiveEntry is one file of the outer OCI layout tar.
type archiveEntry struct {
	name string
	data []byte   // small blobs
	file *os.File // or a file of size bytes
	size int64
}

// writeArchive writes the OCI layout tar to a temporary file next to out and
// renames it into place, so out is either the old archive or the new one.
func writeArchive(out string, date time.Time, entries []archiveEntry) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(out), ".ocipack-out-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if date.IsZero() {
		date = time.Unix(0, 0)
	}
	buf := bufio.NewWriterSize(tmp, 1<<20)
	tw := tar.NewWriter(buf)
	dirs := map[string]bool{}
	for _, e := range entries {
		if err := writeParents(tw, e.name, date, dirs); err != nil {
			return err
		}
		var r io.Reader = bytes.NewReader(e.data)
		size := int64(len(e.data))
		if e.file != nil {
			r, size = e.file, e.size
		}
		hdr := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     e.name,
			Mode:     0o644,
			Size:     size,
			ModTime:  date.UTC(),
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if n, err := io.Copy(tw, r); err != nil {
			return err
		} else if n != size {
			return fmt.Errorf("%s: short copy (%d of %d bytes)", e.name, n, size)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := buf.Flush(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

// writeParents writes the directory entries above name that are not written
// yet, outermost first.
func writeParents(tw *tar.Writer, name string, date time.Time, done map[string]bool) error {
	var missing []string
	for dir := path.Dir(name); dir != "." && dir != "/" && !done[dir]; dir = path.Dir(dir) {
		missing = append(missing, dir)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		done[missing[i]] = true
		hdr := &tar.Header{
			Typeflag: tar.TypeDir,
			Name:     missing[i] + "/",
			Mode:     0o755,
			ModTime:  date.UTC(),
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	return nil
}
