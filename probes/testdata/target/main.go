// A stand-in for a traced Go component: its functions take arguments shaped
// like the real probe points (strings in registers, pointers to structs
// holding strings, integers, a bool result), so the probe engine can be
// checked against values known in advance.
package main

import (
	"bufio"
	"fmt"
	"os"
	"time"
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

// commit and store stand in for the apiserver's storage write: store uses
// commit's results after two more calls, so it saves them in its frame.
//
//go:noinline
func commit(key string, rev int64) (ok bool, newRev int64) {
	return rev%3 != 0, rev + 7
}

var sink int64

//go:noinline
func record(verb string, n int64) { sink += int64(len(verb)) + n }

//go:noinline
func store(key string, rev int64) int64 {
	ok, newRev := commit(key, rev)
	record("write", rev)
	record("read", rev)
	if ok {
		return newRev
	}
	return -1
}

// Node's Next is nil here: a capture that follows it cannot be read.
type Node struct {
	Next *Node
	Val  int64
}

// walk calls out, so it has a frame and a stack check like the functions
// kpath probes.
//
//go:noinline
func walk(n *Node) int64 {
	record("walk", n.Val)
	return n.Val
}

func main() {
	// Wait for "N" lines on stdin, then make N calls from a new goroutine
	// and print "done" with that goroutine's parent (this one). "N P"
	// paces them: P calls a millisecond.
	in := bufio.NewScanner(os.Stdin)
	fmt.Println("ready")
	for in.Scan() {
		var n, pace int
		fmt.Sscan(in.Text(), &n, &pace)
		done := make(chan struct{})
		go func() {
			for i := 0; i < n; i++ {
				if pace > 0 && i%pace == 0 {
					time.Sleep(time.Millisecond)
				}
				req := &Request{Method: "PATCH", URL: &URL{Path: fmt.Sprintf("/api/v1/namespaces/ns/things/t-%d", i)}}
				handle(req, fmt.Sprintf("/registry/things/ns/t-%d", i), int64(i))
				respond(&Response{Header: &Header{Revision: int64(1000 + i)}})
				sink += store(fmt.Sprintf("/registry/things/ns/t-%d", i), int64(i))
				sink += walk(&Node{Val: int64(i)})
			}
			close(done)
		}()
		<-done
		fmt.Println("done")
	}
}
