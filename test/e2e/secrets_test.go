package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSecretPayloadsAreNeverRead: kpath reads keys, names, UIDs and
// revisions, never what an object holds. A Secret holding a marker is
// created and updated with every detail row attached; its writes are
// traced, and the marker (raw or base64) is in no span the collector got,
// no line of the agent's log, no metric and no answer of /api/v1/traces.
func TestSecretPayloadsAreNeverRead(t *testing.T) {
	s := begin(t, 2*time.Minute, "kpath-e2e-secret", "--detail")
	marker := fmt.Sprintf("kpath-secret-marker-%d", time.Now().UnixNano())
	secrets := s.l.client.CoreV1().Secrets(s.ns)
	sec, err := secrets.Create(s.ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "payload"},
		StringData: map[string]string{"token": marker}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.StringData = map[string]string{"token": marker + "-updated", "other": marker}
	if _, err := secrets.Update(s.ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	key := "/registry/secrets/" + s.ns + "/payload"
	err = waitFor(s.ctx, "both writes of the Secret traced", func() (bool, error) {
		n := 0
		for _, tr := range groupTraces(s.rcv.Spans()) {
			if r := tr.root(); r != nil && attrs(r)["kpath.key"] == key {
				n++
			}
		}
		return n >= 2, nil
	})
	if err != nil {
		t.Fatal(err)
	}

	needles := [][]byte{[]byte(marker), []byte(base64.StdEncoding.EncodeToString([]byte(marker)))}
	leaks := func(where string, b []byte) {
		t.Helper()
		for _, n := range needles {
			if bytes.Contains(b, n) {
				t.Errorf("the Secret's content %q is in %s", n, where)
			}
		}
	}
	for _, sp := range s.rcv.Spans() {
		b, err := proto.Marshal(sp)
		if err != nil {
			t.Fatal(err)
		}
		leaks("span "+sp.Name, b)
	}
	for _, path := range []string{"/metrics", "/api/v1/traces", "/api/v1/traces?key=" + key, "/api/v1/traces?namespace=" + s.ns} {
		resp, err := http.Get("http://" + s.a.metrics + path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %v", path, resp.Status, err)
		}
		leaks("GET "+path, b)
		if path == "/api/v1/traces?key="+key && !bytes.Contains(b, []byte(key)) {
			t.Errorf("GET %s holds no trace of the Secret: the check above would prove nothing", path)
		}
	}
	log, err := os.ReadFile(s.a.logPath)
	if err != nil {
		t.Fatal(err)
	}
	leaks("the agent's log", log)
}
