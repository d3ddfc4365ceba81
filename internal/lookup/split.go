package lookup

import "github.com/batonproxy/baton/config"

// Split is the lookup table of a "split_clients" block.
type Split struct {
	parts []splitPart
}

// splitPart is a part as ngx_conf_split_clients_block leaves it: the
// cumulative hash bound, 0 for the part that takes the rest.
type splitPart struct {
	bound uint32
	value string
}

// NewSplit builds the table of sc, with nginx's arithmetic: each part's
// share of the 32-bit hash space is percent*0xffffffff/10000, truncated,
// and the bounds add up in 32 bits; the part that reaches 100% and any "*"
// take every hash left.
func NewSplit(sc *config.SplitClients) *Split {
	s := &Split{}
	var sum, last uint32
	for _, p := range sc.Parts {
		pc := p.Percent
		if pc != 0 {
			sum += pc
		} else {
			sum = 10000
		}
		if sum == 10000 {
			pc = 0
		}
		bound := uint32(0)
		if pc != 0 {
			last += uint32(uint64(pc) * 0xffffffff / 10000)
			bound = last
		}
		s.parts = append(s.parts, splitPart{bound, p.Value})
	}
	return s
}

// Find returns the value of the part key's MurmurHash2 falls in, or "" if
// the parts take less than 100% and key falls in no part.
func (s *Split) Find(key []byte) string {
	h := Murmur2(key)
	for _, p := range s.parts {
		if h < p.bound || p.bound == 0 {
			return p.value
		}
	}
	return ""
}

// Murmur2 is nginx's ngx_murmur_hash2: Austin Appleby's MurmurHash2 with
// seed 0, reading 4-byte blocks little-endian whatever the CPU.
func Murmur2(data []byte) uint32 {
	const m = 0x5bd1e995
	h := uint32(len(data))
	for len(data) >= 4 {
		k := uint32(data[0]) | uint32(data[1])<<8 | uint32(data[2])<<16 | uint32(data[3])<<24
		k *= m
		k ^= k >> 24
		k *= m
		h *= m
		h ^= k
		data = data[4:]
	}
	switch len(data) {
	case 3:
		h ^= uint32(data[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}
