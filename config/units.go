package config

import (
	"errors"
	"math"
	"time"
)

var errInvalidValue = errors.New("invalid value")

// ParseDuration parses an nginx time as the msec-valued directives read it
// (proxy_timeout, proxy_connect_timeout, worker_shutdown_timeout...):
// units "w d h m s ms", each at most once and in that order, combinable
// ("1m30s", "1h 30m"); a bare or trailing number is seconds ("30", "1m30").
// As in nginx's ngx_parse_time with is_sec=0, "M" and "y" are refused here.
func ParseDuration(s string) (time.Duration, error) {
	ms, err := parseTime(s, false)
	if err != nil {
		return 0, err
	}
	if ms > math.MaxInt64/int64(time.Millisecond) {
		return 0, errInvalidValue
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// ParseSeconds parses an nginx time as the second-valued directives and
// parameters read it (fail_timeout=): units "y M w d h m s", no "ms".
func ParseSeconds(s string) (time.Duration, error) {
	sec, err := parseTime(s, true)
	if err != nil {
		return 0, err
	}
	if sec > math.MaxInt64/int64(time.Second) {
		return 0, errInvalidValue
	}
	return time.Duration(sec) * time.Second, nil
}

// parseTime is nginx's ngx_parse_time: the result is in seconds when isSec,
// else in milliseconds.
func parseTime(s string, isSec bool) (int64, error) {
	const (
		stStart = iota
		stYear
		stMonth
		stWeek
		stDay
		stHour
		stMin
		stSec
		stMsec
		stLast
	)
	const maxInt = math.MaxInt64
	var value, total int64
	valid := false
	step := stStart
	if !isSec {
		step = stMonth
	}
	for p := 0; p < len(s); {
		c := s[p]
		if c >= '0' && c <= '9' {
			if value > (maxInt-int64(c-'0'))/10 {
				return 0, errInvalidValue
			}
			value = value*10 + int64(c-'0')
			valid = true
			p++
			continue
		}
		p++
		var scale, max int64
		switch c {
		case 'y':
			if step > stStart {
				return 0, errInvalidValue
			}
			step, scale = stYear, 60*60*24*365
		case 'M':
			if step >= stMonth {
				return 0, errInvalidValue
			}
			step, scale = stMonth, 60*60*24*30
		case 'w':
			if step >= stWeek {
				return 0, errInvalidValue
			}
			step, scale = stWeek, 60*60*24*7
		case 'd':
			if step >= stDay {
				return 0, errInvalidValue
			}
			step, scale = stDay, 60*60*24
		case 'h':
			if step >= stHour {
				return 0, errInvalidValue
			}
			step, scale = stHour, 60*60
		case 'm':
			if p < len(s) && s[p] == 's' {
				if isSec || step >= stMsec {
					return 0, errInvalidValue
				}
				p++
				step, scale = stMsec, 1
				break
			}
			if step >= stMin {
				return 0, errInvalidValue
			}
			step, scale = stMin, 60
		case 's':
			if step >= stSec {
				return 0, errInvalidValue
			}
			step, scale = stSec, 1
		case ' ':
			if step >= stSec {
				return 0, errInvalidValue
			}
			step, scale = stLast, 1
		default:
			return 0, errInvalidValue
		}
		if step != stMsec && !isSec {
			scale *= 1000
		}
		max = maxInt / scale
		if value > max {
			return 0, errInvalidValue
		}
		value *= scale
		if total > maxInt-value {
			return 0, errInvalidValue
		}
		total += value
		value = 0
		for p < len(s) && s[p] == ' ' {
			p++
		}
	}
	if !valid {
		return 0, errInvalidValue
	}
	if !isSec {
		if value > maxInt/1000 {
			return 0, errInvalidValue
		}
		value *= 1000
	}
	if total > maxInt-value {
		return 0, errInvalidValue
	}
	return total + value, nil
}

// ParseSize parses an nginx size: a decimal number of bytes, optionally
// followed by one of "k K m M g G" (powers of 1024), as ngx_parse_offset.
func ParseSize(s string) (int64, error) {
	if s == "" {
		return 0, errInvalidValue
	}
	scale := int64(1)
	switch s[len(s)-1] {
	case 'k', 'K':
		scale = 1 << 10
	case 'm', 'M':
		scale = 1 << 20
	case 'g', 'G':
		scale = 1 << 30
	}
	if scale != 1 {
		s = s[:len(s)-1]
	}
	n, ok := atoi(s)
	if !ok || n > math.MaxInt64/scale {
		return 0, errInvalidValue
	}
	return n * scale, nil
}

// atoi is nginx's ngx_atoi: one or more decimal digits, no sign, no
// overflow. It reports ok false otherwise.
func atoi(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (math.MaxInt64-int64(c-'0'))/10 {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// atoiInt is atoi limited to the int32 range, so results fit any int field.
func atoiInt(s string) (int, bool) {
	n, ok := atoi(s)
	if !ok || n > math.MaxInt32 {
		return 0, false
	}
	return int(n), true
}
