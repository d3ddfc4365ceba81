package proxy

import (
	"os"
	"sync"
)

// logFile is one access_log path, shared by every server that names it.
// Each session end is one write(2) of one line, as nginx without buffer=.
type logFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// openAppend opens an access_log path as nginx does: append, creating it 0644.
func openAppend(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

func (lf *logFile) write(line []byte) {
	lf.mu.Lock()
	lf.f.Write(line) // an access log that cannot be written must not stop traffic
	lf.mu.Unlock()
}

func (lf *logFile) reopen() error {
	f, err := openAppend(lf.path)
	if err != nil {
		return err
	}
	lf.mu.Lock()
	old := lf.f
	lf.f = f
	lf.mu.Unlock()
	return old.Close()
}

func (lf *logFile) close() error {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	return lf.f.Close()
}

// accessLog is one access_log directive of a server: where, and in what format.
type accessLog struct {
	file   *logFile
	format template
}
