// Package mountinfo holds what readers of /proc/self/mountinfo and
// /proc/mounts share. It is a leaf package (strings and strconv only), so
// the sandbox's early start-up path may import it.
package mountinfo

import (
	"strconv"
	"strings"
)

// Unescape undoes the kernel's octal escapes in a mount table field
// (\040 for a space, \011 tab, \012 newline, \134 backslash). A backslash
// not followed by three octal digits of a byte value is kept as it is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
