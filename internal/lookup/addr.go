package lookup

// inetAddr is nginx's ngx_inet_addr: four dot-separated decimal octets,
// leniently (an empty octet is 0). It fails, as nginx's INADDR_NONE, for
// anything else and for 255.255.255.255 itself.
func inetAddr(p []byte) (uint32, bool) {
	var addr, octet uint32
	dots := 0
	for _, c := range p {
		switch {
		case c >= '0' && c <= '9':
			if octet = octet*10 + uint32(c-'0'); octet > 255 {
				return 0, false
			}
		case c == '.':
			addr = addr<<8 + octet
			octet = 0
			dots++
		default:
			return 0, false
		}
	}
	if dots != 3 {
		return 0, false
	}
	addr = addr<<8 + octet
	return addr, addr != inaddrNone
}

// inet6Addr is nginx's ngx_inet6_addr, ported line by line: hex groups of
// at most four digits, one "::", and an IPv4 address as the last 32 bits.
// It is more lenient than RFC 4291 where nginx is (a single leading ":" is
// skipped).
func inet6Addr(p []byte) (addr [16]byte, ok bool) {
	if len(p) == 0 {
		return addr, false
	}
	zero := -1  // where in addr "::" stands
	digit := -1 // where in p the group after the last ":" starts
	nibbles, n, a := 0, 8, 0
	var word uint32
	i := 0
	if p[0] == ':' {
		i++
	}
loop:
	for ; i < len(p); i++ {
		c := p[i]
		if c == ':' {
			if nibbles > 0 {
				digit = i + 1
				addr[a], addr[a+1] = byte(word>>8), byte(word)
				a += 2
				if n--; n > 0 {
					nibbles, word = 0, 0
					continue
				}
			} else if zero < 0 {
				digit = i + 1
				zero = a
				continue
			}
			return addr, false
		}
		if c == '.' && nibbles > 0 {
			if n < 2 || digit < 0 {
				return addr, false
			}
			w, ok := inetAddr(p[digit:])
			if !ok {
				return addr, false
			}
			addr[a], addr[a+1] = byte(w>>24), byte(w>>16)
			a += 2
			n--
			word = w
			break loop
		}
		if nibbles++; nibbles > 4 {
			return addr, false
		}
		switch {
		case c >= '0' && c <= '9':
			word = word*16 + uint32(c-'0')
		case c|0x20 >= 'a' && c|0x20 <= 'f':
			word = word*16 + uint32(c|0x20-'a') + 10
		default:
			return addr, false
		}
	}
	if nibbles == 0 && zero < 0 {
		return addr, false
	}
	addr[a], addr[a+1] = byte(word>>8), byte(word)
	a += 2
	if n--; n > 0 {
		if zero >= 0 {
			gap := n * 2
			copy(addr[zero+gap:], addr[zero:a])
			clear(addr[zero : zero+gap])
			return addr, true
		}
	} else if zero < 0 {
		return addr, true
	}
	return addr, false
}
