package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

const (
	maxIncludeDepth = 32       // nested includes; deeper is surely a cycle through symlinks or a mistake
	maxFiles        = 1024     // files read in one Load, however they are reached
	maxFileSize     = 64 << 20 // bytes in one file
	maxTotalSize    = 64 << 20 // bytes read in one Load, over every file and every time a file is read (issue 12)
	resolveTimeout  = 10 * time.Second
)

// Why a file was refused before it was read.
var (
	errNotRegular = errors.New("not a regular file")
	errFileSize   = fmt.Errorf("larger than %d bytes", maxFileSize)
	errTotalSize  = fmt.Errorf("more than %d bytes read in all", maxTotalSize)
)

// include reads the file(s) an "include" names and hands their directives
// to fn, in the including context. As nginx's ngx_conf_include, a relative
// path resolves against the main file's directory (conf_prefix), a path with
// any of "*?[" is a glob whose matches are read in sorted order and which
// may match nothing, and a plain path must exist.
func (l *loader) include(d *directive, ctx scope, fn func(*directive)) {
	name := d.args[0]
	if name == "" {
		l.errorf(d, "invalid number of arguments in \"include\" directive")
		return
	}
	if !filepath.IsAbs(name) {
		name = filepath.Join(l.prefix, name)
	}
	if !strings.ContainsAny(name, "*?[") {
		l.includeFile(d, name, ctx, fn)
		return
	}
	matches, err := l.glob(name)
	if err != nil {
		l.errorf(d, "glob() \"%s\" failed (%v)", name, err)
		return
	}
	for _, m := range matches {
		if l.fatal {
			return
		}
		l.includeFile(d, m, ctx, fn)
	}
}

func (l *loader) includeFile(d *directive, name string, ctx scope, fn func(*directive)) {
	for _, s := range l.stack {
		if s == name {
			l.errorf(d, "include cycle: \"%s\" is already being read", name)
			return
		}
	}
	if len(l.stack) > maxIncludeDepth {
		l.errorf(d, "includes are nested more than %d deep", maxIncludeDepth)
		return
	}
	if l.nfiles++; l.nfiles > maxFiles {
		l.errorf(d, "more than %d files included", maxFiles)
		l.fatal = true
		return
	}
	src, err := l.readFile(name)
	switch {
	case errors.Is(err, errTotalSize):
		// One file may be fine; the sum is what is refused, here, and
		// nothing more is read.
		l.errorf(d, "the configuration would be more than %d bytes with \"%s\" included", maxTotalSize, name)
		l.fatal = true
		return
	case err != nil:
		l.errorf(d, "%s", openError(name, err))
		return
	}
	if !l.seen[name] {
		l.seen[name] = true
		l.cfg.Files = append(l.cfg.Files, name)
	}
	dirs, perr := parseFile(name, src)
	if perr != nil {
		l.errs = append(l.errs, perr)
		l.fatal = true
		return
	}
	l.stack = append(l.stack, name)
	l.each(dirs, ctx, fn)
	l.stack = l.stack[:len(l.stack)-1]
}

// openError words a failed read as nginx does:
// open() "PATH" failed (2: No such file or directory). A file refused
// before it was opened is named with the reason: "PATH" is not a regular file.
func openError(name string, err error) string {
	var errno syscall.Errno
	switch {
	case errors.Is(err, errNotRegular), errors.Is(err, errFileSize), errors.Is(err, errTotalSize):
		return fmt.Sprintf("\"%s\" is %v", name, err)
	case errors.As(err, &errno):
		msg := errno.Error()
		if msg != "" {
			msg = strings.ToUpper(msg[:1]) + msg[1:]
		}
		return fmt.Sprintf("open() \"%s\" failed (%d: %s)", name, int(errno), msg)
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("open() \"%s\" failed (2: No such file or directory)", name)
	}
	return fmt.Sprintf("open() \"%s\" failed (%v)", name, err)
}

// readFile reads name, through the seam if there is one, and counts its
// bytes against the Load's total (maxTotalSize): a thousand includes of one
// 20 MB file took a minute before there was one (issue 12).
func (l *loader) readFile(name string) ([]byte, error) {
	room := int64(maxTotalSize) - l.nbytes
	var b []byte
	var err error
	if l.ld.ReadFile != nil {
		b, err = l.ld.ReadFile(name)
	} else {
		b, err = readRegular(name, room)
	}
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > room {
		return nil, errTotalSize
	}
	l.nbytes += int64(len(b))
	return b, nil
}

// readRegular reads the regular file name, of at most maxFileSize bytes and
// at most room. Anything else is refused before it is opened (issue 12):
// opening a FIFO for reading blocks until a writer comes, and opening a
// device can do anything the device does on open. Stat follows symlinks, as
// open does. Should name become something else between the Stat and the
// open, O_NONBLOCK keeps the open from blocking on a FIFO, and the file's
// own Stat refuses it.
func readRegular(name string, room int64) ([]byte, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if err := checkRegular(fi, room); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, err
	}
	if err := checkRegular(fi, room); err != nil {
		return nil, err
	}
	limit := min(maxFileSize, room)
	b, err := io.ReadAll(io.LimitReader(f, limit+1)) // the file may have grown since
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		if len(b) > maxFileSize {
			return nil, errFileSize
		}
		return nil, errTotalSize
	}
	return b, nil
}

// checkRegular refuses what readRegular must not read, by its Stat.
func checkRegular(fi os.FileInfo, room int64) error {
	switch {
	case !fi.Mode().IsRegular():
		return errNotRegular
	case fi.Size() > maxFileSize:
		return errFileSize
	case fi.Size() > room:
		return errTotalSize
	}
	return nil
}

// glob expands pattern as glob(3) with flags 0, which nginx's ngx_open_glob
// uses: the whole list sorted bytewise, and no match for a name starting
// with "." unless the pattern's element starts with "." too.
func (l *loader) glob(pattern string) ([]string, error) {
	if l.ld.Glob != nil {
		return l.ld.Glob(pattern)
	}
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	pelems := strings.Split(pattern, "/")
	out := matches[:0]
	for _, m := range matches {
		if !hiddenMatch(pelems, strings.Split(m, "/")) {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out, nil
}

// hiddenMatch reports whether a path element starting with "." was matched
// by a pattern element that does not start with ".".
func hiddenMatch(pattern, path []string) bool {
	if len(pattern) != len(path) {
		return false // filepath.Glob cleaned something; nothing to compare
	}
	for i, p := range pattern {
		if strings.HasPrefix(path[i], ".") && !strings.HasPrefix(p, ".") {
			return true
		}
	}
	return false
}
