package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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
		resp, err := s.a.get(path)
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

// With --hash-names-key-file, object names are in no exported span and no
// trace endpoint; their traces are still whole, under the names' hashes.
func TestNamesAreHashedWhenAsked(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("kpath-e2e-name-hashing-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := begin(t, 2*time.Minute, "kpath-e2e-hash-", "--hash-names-key-file="+keyFile)
	name := fmt.Sprintf("tenant-acme-%d", time.Now().UnixNano())
	cms := s.l.client.CoreV1().ConfigMaps(s.ns)
	cm, err := cms.Create(s.ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data = map[string]string{"k": "v"}
	if _, err := cms.Update(s.ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	prefix := "/registry/configmaps/" + s.ns + "/h-"
	var hashed string
	err = waitFor(s.ctx, "both writes traced under the name's hash", func() (bool, error) {
		n := 0
		for _, tr := range groupTraces(s.rcv.Spans()) {
			if r := tr.root(); r != nil {
				if k, _ := attrs(r)["kpath.key"].(string); strings.HasPrefix(k, prefix) && tr.checkWriteChain(k, 0) == nil {
					hashed = k
					n++
				}
			}
		}
		return n >= 2, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, sp := range s.rcv.Spans() {
		b, _ := proto.Marshal(sp)
		if bytes.Contains(b, []byte(name)) {
			t.Errorf("the name %s is in span %q", name, sp.Name)
		}
	}
	for _, path := range []string{"/api/v1/traces", "/api/v1/traces?key=" + hashed} {
		resp, err := s.a.get(path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Contains(b, []byte(name)) {
			t.Errorf("the name %s is in GET %s", name, path)
		}
		if strings.Contains(path, "key=") && !bytes.Contains(b, []byte(hashed)) {
			t.Errorf("GET %s finds no trace by the hashed key", path)
		}
	}
	t.Logf("%s/%s exported as %s", s.ns, name, hashed)
}
