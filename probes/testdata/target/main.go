// A stand-in for a traced Go component: its functions take arguments shaped
// like the real probe points (strings in registers, pointers to structs
// holding strings, integers, a bool result), so the probe engine can be
// checked against values known in advance.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
)

type URL struct {
	Scheme, Opaque string
	User           *int
	Host, Path     string
}

type Request struct {
	Method string
	URL    *URL
}

type Header struct {
	ClusterID, MemberID uint64
	Revision            int64
}

type Response struct{ Header *Header }

//go:noinline
func handle(req *Request, key string, rev int64) (ok bool, newRev int64) {
	if rev%3 == 0 {
		return false, rev
	}
	if rev%3 == 1 {
		return true, rev + 1
	}
	return true, rev + 2
}

//go:noinline
func respond(r *Response) *Response {
	r.Header.Revision++
	return r
}

func main() {
	// Wait for "go N" lines on stdin, then make N calls from a new goroutine
	// and print "done" with that goroutine's parent (this one).
	in := bufio.NewScanner(os.Stdin)
	fmt.Println("ready")
	for in.Scan() {
		n, _ := strconv.Atoi(in.Text())
		done := make(chan struct{})
		go func() {
			for i := 0; i < n; i++ {
				req := &Request{Method: "PATCH", URL: &URL{Path: fmt.Sprintf("/api/v1/namespaces/ns/things/t-%d", i)}}
				handle(req, fmt.Sprintf("/registry/things/ns/t-%d", i), int64(i))
				respond(&Response{Header: &Header{Revision: int64(1000 + i)}})
			}
			close(done)
		}()
		<-done
		fmt.Println("done")
	}
}
