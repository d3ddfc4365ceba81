package tlsrec

import (
	"encoding/binary"
	"errors"
)

// stateVersion is the encoding's: a process that does not know a state's
// version refuses it (the old process keeps the connection).
const stateVersion = 1

// MarshalBinary encodes s for another process.
func (s *State) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, 64+len(s.InSecret)+len(s.OutSecret)+len(s.In)+len(s.Plain)+len(s.Out))
	b = append(b, stateVersion)
	b = binary.BigEndian.AppendUint16(b, s.Version)
	b = binary.BigEndian.AppendUint16(b, s.Suite)
	server := byte(0)
	if s.Server {
		server = 1
	}
	b = append(b, server)
	b = binary.BigEndian.AppendUint64(b, s.InSeq)
	b = binary.BigEndian.AppendUint64(b, s.OutSeq)
	for _, f := range [][]byte{s.InSecret, s.OutSecret, s.In, s.Plain, s.Out} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	return b, nil
}

var errState = errors.New("tls record state: malformed")

// UnmarshalBinary decodes what MarshalBinary wrote. A state of another
// encoding version, or a suite this layer does not carry, is an error.
func (s *State) UnmarshalBinary(b []byte) error {
	if len(b) < 22 {
		return errState
	}
	if b[0] != stateVersion {
		return errors.New("tls record state: unknown version")
	}
	*s = State{
		Version: binary.BigEndian.Uint16(b[1:]), Suite: binary.BigEndian.Uint16(b[3:]), Server: b[5] == 1,
		InSeq: binary.BigEndian.Uint64(b[6:]), OutSeq: binary.BigEndian.Uint64(b[14:]),
	}
	if suiteFor(s.Version, s.Suite) == nil {
		return ErrUnsupported
	}
	b = b[22:]
	for _, f := range []*[]byte{&s.InSecret, &s.OutSecret, &s.In, &s.Plain, &s.Out} {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return errState
		}
		*f = clone(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	if len(b) != 0 {
		return errState
	}
	return nil
}
