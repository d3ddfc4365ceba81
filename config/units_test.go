package config

import (
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30", 30 * time.Second, true},
		{"500ms", 500 * time.Millisecond, true},
		{"1m30s", 90 * time.Second, true},
		{"1m30", 90 * time.Second, true},
		{"1h 30m", 90 * time.Minute, true},
		{"2w1d", 15 * 24 * time.Hour, true},
		{"1s500ms", 1500 * time.Millisecond, true},
		{"0", 0, true},
		{"10m", 10 * time.Minute, true},
		{"1M", 0, false}, // months and years only in second-valued directives
		{"1y", 0, false},
		{"30s1m", 0, false}, // units must decrease
		{"1s1s", 0, false},
		{"", 0, false},
		{"s", 0, false},
		{"-1", 0, false},
		{"1x", 0, false},
		{"1.5s", 0, false},
		{"99999999999999999999", 0, false},
		{"9223372036854775807ms", 0, false}, // fits nginx's msec but not time.Duration
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseSeconds(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"10", 10 * time.Second, true},
		{"10s", 10 * time.Second, true},
		{"1y", 365 * 24 * time.Hour, true},
		{"1M1d", 31 * 24 * time.Hour, true},
		{"500ms", 0, false},
		{"1m1M", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSeconds(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSeconds(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"512", 512, true},
		{"16k", 16 << 10, true},
		{"16K", 16 << 10, true},
		{"1m", 1 << 20, true},
		{"1M", 1 << 20, true},
		{"2g", 2 << 30, true},
		{"2G", 2 << 30, true},
		{"", 0, false},
		{"k", 0, false},
		{"1kb", 0, false},
		{"-1", 0, false},
		{"1.5m", 0, false},
		{"99999999999g", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
