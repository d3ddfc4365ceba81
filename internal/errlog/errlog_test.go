package errlog

import (
	"regexp"
	"strings"
	"testing"
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
