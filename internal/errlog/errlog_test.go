package errlog

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/batonproxy/baton/internal/syslog"
)

func TestParseLevel(t *testing.T) {
	for _, tc := range []struct {
		name string
		want Level
	}{{"", LevelError}, {"debug", LevelDebug}, {"notice", LevelNotice}, {"emerg", LevelEmerg}} {
		if got, err := ParseLevel(tc.name); err != nil || got != tc.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if _, err := ParseLevel("loud"); err == nil {
		t.Error(`ParseLevel("loud"): no error`)
	}
	if s := Level(42).String(); s != "level(42)" {
		t.Errorf("Level(42) is %q", s)
	}
}

// Lines below the Logger's level are not written; the others are nginx's.
func TestLoggerLines(t *testing.T) {
	var b strings.Builder
	l := NewWriter(&b, LevelWarn)
	l.Logf(LevelInfo, "not written")
	l.Logf(LevelError, "*%d connect() failed", 7)
	if !l.Enabled(LevelWarn) || l.Enabled(LevelNotice) {
		t.Error("Enabled does not follow the level")
	}
	re := regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[error\] \d+#0: \*7 connect\(\) failed\n$`)
	if !re.MatchString(b.String()) {
		t.Errorf("log:\n%s", b.String())
	}
	var nl *Logger
	nl.Logf(LevelEmerg, "a nil Logger logs nothing")
}

// Each target gets the lines its level reaches; a syslog target gets them
// after a header whose severity is the line's level, without the newline.
func TestLoggerTargets(t *testing.T) {
	dir := t.TempDir()
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	sc := syslog.Config{Addr: srv.LocalAddr().(*net.UDPAddr).AddrPort(), Facility: 23, Severity: 0, Tag: "nginx"}
	l, err := Open(
		Target{Path: filepath.Join(dir, "info.log"), Level: LevelInfo},
		Target{Path: filepath.Join(dir, "error.log"), Level: LevelError},
		Target{Syslog: &sc, Level: LevelNotice},
	)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if !l.Enabled(LevelInfo) || l.Enabled(LevelDebug) {
		t.Error("Enabled does not follow the lowest level")
	}
	l.Logf(LevelDebug, "d")
	l.Logf(LevelInfo, "i")
	l.Logf(LevelWarn, "w")
	l.Logf(LevelError, "e")
	lines := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return regexp.MustCompile(`(?m)^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#0: `).ReplaceAllString(string(b), "$1 ")
	}
	if got := lines("info.log"); got != "[info] i\n[warn] w\n[error] e\n" {
		t.Errorf("info.log %q", got)
	}
	if got := lines("error.log"); got != "[error] e\n" {
		t.Errorf("error.log %q", got)
	}
	b := make([]byte, 4096)
	re := regexp.MustCompile(`^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ nginx: \d{4}/\d\d/\d\d \d\d:\d\d:\d\d (\[\w+\]) \d+#0: (\w)$`)
	for _, want := range []string{"188 [warn] w", "187 [error] e"} { // local7*8 + 4 (warning), + 3 (err)
		n, _, err := srv.ReadFrom(b)
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindStringSubmatch(string(b[:n]))
		if m == nil || strings.Join(m[1:], " ") != want {
			t.Errorf("syslog %q, want %s", b[:n], want)
		}
	}
	// A reload points it elsewhere; Close ends it.
	if err := l.Retarget(Target{Path: filepath.Join(dir, "new.log"), Level: LevelWarn}); err != nil {
		t.Fatal(err)
	}
	l.Logf(LevelError, "n")
	if err := l.Retarget(Target{Path: filepath.Join(dir, "no", "such.log")}); err == nil {
		t.Error("Retarget to a file that cannot be opened")
	}
	l.Logf(LevelError, "kept")
	l.Close()
	l.Logf(LevelEmerg, "after close")
	if got := lines("new.log"); got != "[error] n\n[error] kept\n" {
		t.Errorf("new.log %q", got)
	}
	if l.Enabled(LevelEmerg) {
		t.Error("Enabled after Close")
	}
}
