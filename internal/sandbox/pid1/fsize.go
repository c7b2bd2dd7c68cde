package pid1

import (
	"fmt"
	"os/signal"

	"golang.org/x/sys/unix"
)

// limitFileSize sets RLIMIT_FSIZE (soft and hard: the command cannot raise
// it without CAP_SYS_RESOURCE on the host) to c.FileSizeLimit when the host
// asks for one: the workspace's disk limit when no project quota enforces
// it, so one file cannot pass the limit between two measurements. SIGXFSZ
// is ignored, and stays ignored across execve, so a write beyond the limit
// fails with EFBIG instead of killing the writer without a word.
func limitFileSize(c *Config) error {
	if c.FileSizeLimit <= 0 {
		return nil
	}
	lim := uint64(c.FileSizeLimit)
	if err := unix.Setrlimit(unix.RLIMIT_FSIZE, &unix.Rlimit{Cur: lim, Max: lim}); err != nil {
		return fmt.Errorf("RLIMIT_FSIZE %d: %w", lim, err)
	}
	signal.Ignore(unix.SIGXFSZ)
	return nil
}
