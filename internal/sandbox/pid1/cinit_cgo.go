//go:build cgo

package pid1

/*
#cgo CFLAGS: -Wall -Wextra -Wformat=2 -Wshadow -O2
#include "cinit.h"
*/
import "C"

import (
	"errors"
	"sync"
	"unsafe"
)

// cinitResumed says whether the C start-up (cinit.c) ran as PID 1, set up
// the sandbox, started the command and returned to let Go serve the exec
// channel; if so it returns the command's pid and the encoded config.
func cinitResumed() (pid int, config []byte, ok bool) {
	s := C.cinit_get_state()
	if s.resumed == 0 {
		return 0, nil, false
	}
	return int(s.command_pid), C.GoBytes(unsafe.Pointer(s.config), C.int(s.config_len)), true
}

// cDecodeMu serializes cDecode: the C decoder fills one static config.
var cDecodeMu sync.Mutex

// cDecode runs the C start-up's decoder on b (tests: it must agree with
// DecodeConfig on every input).
func cDecode(b []byte) error {
	cDecodeMu.Lock()
	defer cDecodeMu.Unlock()
	var msg [4096]C.char
	var p *C.uchar
	if len(b) > 0 {
		p = (*C.uchar)(unsafe.Pointer(&b[0]))
	}
	if C.cinit_decode_check(p, C.size_t(len(b)), &msg[0], C.size_t(len(msg))) != 0 {
		return errors.New(C.GoString(&msg[0]))
	}
	return nil
}

// haveCInit says PID 1 starts in C in this build.
const haveCInit = true

// HaveCInit says whether this build starts PID 1 in C (cinit.c).
const HaveCInit = haveCInit
