package quota

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// MaxDepth is how deeply nested a workspace's directories may be. A deeper
// workspace cannot be measured, which stops its sandbox (what a walk
// cannot reach would otherwise be unlimited).
const MaxDepth = 512

var (
	errOver      = errors.New("over the limit")
	errOverFiles = errors.New("over the file count limit")
	errTooDeep   = fmt.Errorf("directories nested deeper than %d levels", MaxDepth)
)

// walker measures the space allocated under a directory (st_blocks, each
// inode once) without following symlinks or leaving the filesystem. Every
// name is resolved relative to an open descriptor of its parent
// (openat/fstatat with O_NOFOLLOW), so a directory swapped for a symlink
// while it runs leads nowhere outside. It runs as root on the host over a
// tree the sandbox controls: it only reads, except label, which sets
// project ids.
type walker struct {
	dev  uint64
	stop int64 // return errOver once used > stop (0: never)
	// stopFiles: return errOverFiles once more than stopFiles entries
	// were counted (0: never).
	stopFiles int64
	// label, if set, is called with an open descriptor of every directory
	// (dir true) and regular file.
	label   func(fd int, dir bool) error
	used    int64
	entries int64
	links   map[uint64]struct{} // inodes with more than one link already counted
	// track, if set, receives the allocated bytes of every regular file,
	// by inode.
	track map[uint64]int64
	bufs  [][]byte // one getdents buffer per depth
}

// Usage returns the bytes allocated to the files and directories under dir
// (the sum of st_blocks × 512, hard links counted once, dir included).
func Usage(dir string) (int64, error) {
	fd, err := openDir(unix.AT_FDCWD, dir)
	if err != nil {
		return 0, fmt.Errorf("measure %s: %w", dir, err)
	}
	defer unix.Close(fd)
	w, err := newWalker(fd)
	if err != nil {
		return 0, fmt.Errorf("measure %s: %w", dir, err)
	}
	if err := w.run(fd); err != nil {
		return w.used, fmt.Errorf("measure %s: %w", dir, err)
	}
	return w.used, nil
}

// newWalker returns a walker for the tree rooted at the open directory fd.
func newWalker(fd int) (*walker, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	return &walker{dev: st.Dev}, nil
}

// run measures the tree at the open directory fd (which it does not
// close), labelling it first if w.label is set.
func (w *walker) run(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	// The root descriptor is reused from walk to walk: list it from the
	// start again.
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return err
	}
	w.used, w.entries = 0, 0
	clear(w.links)
	clear(w.track)
	w.count(&st)
	if w.label != nil {
		if err := w.label(fd, true); err != nil {
			return err
		}
	}
	return w.dir(fd, 0)
}

func (w *walker) count(st *unix.Stat_t) {
	w.entries++
	if st.Nlink > 1 && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if w.links == nil {
			w.links = make(map[uint64]struct{})
		}
		if _, seen := w.links[st.Ino]; seen {
			return
		}
		w.links[st.Ino] = struct{}{}
	}
	if w.track != nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		w.track[st.Ino] = st.Blocks * 512
	}
	w.used += st.Blocks * 512
}

// dir walks the entries of the open directory fd, at depth.
func (w *walker) dir(fd, depth int) error {
	if depth >= MaxDepth {
		return errTooDeep
	}
	if len(w.bufs) <= depth {
		w.bufs = append(w.bufs, make([]byte, 16<<10))
	}
	buf := w.bufs[depth]
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return fmt.Errorf("getdents: %w", err)
		}
		if n <= 0 {
			return nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names[:0])
		for _, name := range names {
			if err := w.entry(fd, name, depth); err != nil {
				return err
			}
			if w.stop > 0 && w.used > w.stop {
				return errOver
			}
			if w.stopFiles > 0 && w.entries > w.stopFiles {
				return errOverFiles
			}
		}
	}
}

// entry counts (and labels, and descends into) one directory entry.
func (w *walker) entry(parent int, name string, depth int) error {
	var st unix.Stat_t
	if err := unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // removed since it was listed
		}
		return fmt.Errorf("stat %s: %w", name, err)
	}
	if st.Dev != w.dev {
		return nil // a mount point: another filesystem
	}
	w.count(&st)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		cfd, err := openDir(parent, name)
		if err != nil {
			if raced(err) {
				return nil
			}
			return fmt.Errorf("open %s: %w", name, err)
		}
		defer unix.Close(cfd)
		if w.label != nil {
			if err := w.label(cfd, true); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		if err := w.dir(cfd, depth+1); err != nil {
			if err == errOver || err == errOverFiles || err == errTooDeep {
				return err
			}
			return fmt.Errorf("%s/%w", name, err)
		}
	case unix.S_IFREG:
		if w.label == nil {
			return nil
		}
		ffd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NOATIME, 0)
		if err != nil {
			if raced(err) {
				return nil
			}
			return fmt.Errorf("open %s: %w", name, err)
		}
		defer unix.Close(ffd)
		if err := w.label(ffd, false); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// raced says whether err is what opening an entry that was removed or
// replaced (by a symlink, by a file) since it was listed returns.
func raced(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR)
}
