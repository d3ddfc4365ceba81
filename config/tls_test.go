package config

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// ssl_password_file unlocks an encrypted key (PKCS#8 PBES2, as "openssl
// genrsa -aes128" writes it), trying each line in turn; a wrong password
// is refused naming the key.
func TestSSLPasswordFile(t *testing.T) {
	dir := t.TempDir()
	key, crt := filepath.Join(dir, "a.key"), filepath.Join(dir, "a.crt")
	for _, args := range [][]string{
		{"genrsa", "-out", key, "-passout", "pass:secret", "-aes128", "2048"},
		{"req", "-x509", "-new", "-key", key, "-passin", "pass:secret", "-subj", "/CN=a/", "-out", crt},
	} {
		if out, err := exec.Command("openssl", args...).CombinedOutput(); err != nil {
			t.Fatalf("openssl %s: %v\n%s", args[0], err, out)
		}
	}
	if data, _ := os.ReadFile(key); !strings.Contains(string(data), "ENCRYPTED") {
		t.Fatalf("the key is not encrypted:\n%s", data)
	}
	os.WriteFile(filepath.Join(dir, "good"), []byte("wrong\r\nsecret\r\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "bad"), []byte("wrong\n"), 0o600)
	conf := func(pw string) string {
		return "stream { server { listen 127.0.0.1:1 ssl; ssl_certificate " + crt + "; ssl_certificate_key " + key +
			"; ssl_password_file " + filepath.Join(dir, pw) + "; return x; } }"
	}
	c, err := testLoader().Parse("a.conf", []byte(conf("good")))
	if err != nil {
		t.Fatal(err)
	}
	if tl := c.Stream.Servers[0].TLS; tl == nil || len(tl.Certs) != 1 {
		t.Fatalf("TLS %+v", tl)
	}
	_, err = testLoader().Parse("a.conf", []byte(conf("bad")))
	if err == nil || !strings.Contains(err.Error(), `cannot load certificate key "`+key+`": bad password read`) {
		t.Fatalf("a wrong password: %v", err)
	}
}
