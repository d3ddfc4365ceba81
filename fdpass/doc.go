// Package fdpass moves open sockets from one baton process to the next over a
// Unix-domain SOCK_SEQPACKET socket, with SCM_RIGHTS. It is the lowest layer of
// baton's upgrade handoff (HANDOFF.md §2): the channel, the record framing, the
// descriptor plumbing and the checks a receiver makes before it trusts a
// descriptor. It imports no baton package.
//
// Wire format (HANDOFF.md §2.3). One sendmsg carries exactly one record and the
// descriptors that record refers to; SEQPACKET keeps the boundaries, so the
// descriptors arrive atomically with their record. All integers are little-endian.
//
//	 0               4       6       8                              16
//	+---------------+-------+-------+-------------------------------+
//	| magic "BTN1"  |  ver  | type  |              seq              |
//	+---------------+-------+-------+-------------------------------+
//	|              ack              | nfds  | flags |    bodylen    |
//	+-------------------------------+-------+-------+---------------+
//	16                              24      26      28              32
//	| body: bodylen bytes (header + body ≤ MaxRecord = 64 KiB)      |
//	+---------------------------------------------------------------+
//	ancillary data: SCM_RIGHTS with exactly nfds descriptors (≤ MaxFDs = 252)
//
// A body is a sequence of fixed-width fields and length-prefixed strings
// (Encoder, Decoder). A descriptor is referred to by its index 0..nfds-1 into
// this record's SCM_RIGHTS array, written as a u16; a Decoder rejects an index
// that is out of range, used twice, or never used.
//
// Invariants:
//   - Send never closes or changes the files it is given: the caller owns them,
//     and Dup duplicates a socket without touching its blocking mode (P3).
//   - Receive owns every descriptor the kernel installed until it returns them;
//     on every error path it closes all of them (P11), and it checks the count
//     against the header and MSG_CTRUNC before returning any (P7).
//   - Received descriptors are close-on-exec (Go passes MSG_CMSG_CLOEXEC, P10).
//
// Only Linux is supported; elsewhere the socket functions return ErrNotSupported.
// Record and body encoding are portable.
package fdpass
