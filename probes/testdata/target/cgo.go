//go:build kpathcgo

package main

// static long kpath_add(long a, long b) { return a + b; }
import "C"

// With this file (go build -tags kpathcgo) the program links C code, libc
// and the cgo runtime, as programs built with CGO_ENABLED=1 do.
func init() { sink += int64(C.kpath_add(1, 2)) }
