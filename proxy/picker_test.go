package proxy

import (
	"fmt"
	"testing"

	"github.com/batonproxy/baton/config"
)

// A backup server written before "hash" is accepted (with a warning) and,
// as in nginx, never used: the mapping is the one without it.
func TestBackupBeforeHashIsNeverUsed(t *testing.T) {
	const tmpl = `stream {
    upstream u {
        %s
        hash $remote_addr%s;
        server 127.0.0.1:19001;
        server 127.0.0.1:19002;
        server 127.0.0.1:19003;
    }
    server { listen 127.0.0.1:18000; proxy_pass u; }
}`
	for _, consistent := range []string{"", " consistent"} {
		with, err := config.Parse("with.conf", []byte(fmt.Sprintf(tmpl, "server 127.0.0.1:19009 backup;", consistent)))
		if err != nil {
			t.Fatal(err)
		}
		if len(with.Warnings) == 0 {
			t.Errorf("no warning about the unused backup server")
		}
		without, err := config.Parse("without.conf", []byte(fmt.Sprintf(tmpl, "", consistent)))
		if err != nil {
			t.Fatal(err)
		}
		a, err := NewPicker(with.Stream.Upstreams[0])
		if err != nil {
			t.Fatal(err)
		}
		b, err := NewPicker(without.Stream.Upstreams[0])
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 500; i++ {
			key := fmt.Sprintf("10.0.%d.%d", i/256, i%256)
			na, _, err1 := a.Pick(key)
			nb, _, err2 := b.Pick(key)
			if err1 != nil || err2 != nil || na != nb {
				t.Fatalf("hash%s key %s: with backup %s (%v), without %s (%v)", consistent, key, na, err1, nb, err2)
			}
		}
	}
}
