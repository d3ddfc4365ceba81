// Package sock is baton's thin layer over Linux socket system calls:
// listening sockets made as nginx's listen directive asks (TCP and UDP),
// the data path's nonblocking reads, writes, accepts, connects and closes,
// datagram control messages, and the descriptor plumbing of an upgrade. It
// knows nothing of sessions, loops or configuration; package proxy is the
// glue.
//
// The data path's calls (Read, Write, Send, Accept4, Dial, Close, EpollCtl,
// Splice, SendUDP, RecvUDP) go through RawSyscall, not Syscall: on a
// nonblocking socket they never block, so the scheduler need not be told,
// and telling it costs more than the call itself on loopback (see Read and
// Accept4). They are small enough to inline into their callers, or are one
// call away from the system call.
//
// Descriptors are plain ints. A function that returns one gives it to the
// caller, who closes it; none closes a descriptor it is given unless its
// name says so (Close, CloseFD, TakeFD's file). Socket setup errors print as
// nginx prints them ("bind() to 127.0.0.1:80 failed (98: Address already in
// use)") and unwrap to the errno; the data path returns the unix.Errno
// itself, which ErrnoText formats for a log line.
package sock
