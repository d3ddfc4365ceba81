package config

import "fmt"

// directive is one parsed statement: "name args... ;" or "name args... { block }".
type directive struct {
	name     string
	args     []string
	pos      Pos // where nginx reports it: the line of the closing ";" or the opening "{"
	hasBlock bool
	block    []*directive
	end      Pos // for blocks, the line of the closing "}"
}

// maxBlockDepth bounds nesting so a hostile file cannot exhaust the stack.
const maxBlockDepth = 64

// How a call to lexer.next ended, as ngx_conf_read_token's return codes.
const (
	endDirective  = iota // ";" (NGX_OK)
	endBlockStart        // "{" (NGX_CONF_BLOCK_START)
	endBlockDone         // "}" (NGX_CONF_BLOCK_DONE)
	endFile              // end of input (NGX_CONF_FILE_DONE)
)

// lexer splits config text into directives the way nginx's
// ngx_conf_read_token does, byte for byte: same quoting, escapes, comments,
// "${var}" handling and error messages, and the same line counting.
type lexer struct {
	file string
	src  []byte
	i    int
	line int
}

func (lx *lexer) errorf(format string, a ...any) *Error {
	return &Error{Pos: Pos{lx.file, lx.line}, Msg: fmt.Sprintf(format, a...)}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// next reads one directive's words and reports how it ended.
func (lx *lexer) next() (args []string, end int, err *Error) {
	var found, needSpace, sharpComment, variable, quoted, sQuoted, dQuoted bool
	lastSpace := true
	start := lx.i
	for {
		if lx.i >= len(lx.src) {
			if len(args) > 0 || !lastSpace {
				return nil, 0, lx.errorf(`unexpected end of file, expecting ";" or "}"`)
			}
			return nil, endFile, nil
		}
		ch := lx.src[lx.i]
		lx.i++
		if ch == '\n' {
			lx.line++
			sharpComment = false
		}
		if sharpComment {
			continue
		}
		if quoted {
			quoted = false
			continue
		}
		if needSpace {
			switch {
			case isSpace(ch):
				lastSpace, needSpace = true, false
				continue
			case ch == ';':
				return args, endDirective, nil
			case ch == '{':
				return args, endBlockStart, nil
			case ch == ')':
				lastSpace, needSpace = true, false
			default:
				return nil, 0, lx.errorf(`unexpected "%s"`, []byte{ch})
			}
		}
		if lastSpace {
			start = lx.i - 1
			if isSpace(ch) {
				continue
			}
			switch ch {
			case ';', '{':
				if len(args) == 0 {
					return nil, 0, lx.errorf(`unexpected "%s"`, []byte{ch})
				}
				if ch == '{' {
					return args, endBlockStart, nil
				}
				return args, endDirective, nil
			case '}':
				if len(args) != 0 {
					return nil, 0, lx.errorf(`unexpected "}"`)
				}
				return nil, endBlockDone, nil
			case '#':
				sharpComment = true
				continue
			case '\\':
				quoted, lastSpace = true, false
				continue
			case '"':
				start++
				dQuoted, lastSpace = true, false
				continue
			case '\'':
				start++
				sQuoted, lastSpace = true, false
				continue
			case '$':
				variable, lastSpace = true, false
				continue
			default:
				lastSpace = false
			}
			continue
		}
		if ch == '{' && variable {
			continue // "${name}" stays one word
		}
		variable = false
		if ch == '\\' {
			quoted = true
			continue
		}
		if ch == '$' {
			variable = true
			continue
		}
		switch {
		case dQuoted:
			if ch == '"' {
				dQuoted, needSpace, found = false, true, true
			}
		case sQuoted:
			if ch == '\'' {
				sQuoted, needSpace, found = false, true, true
			}
		case isSpace(ch) || ch == ';' || ch == '{':
			lastSpace, found = true, true
		}
		if found {
			args = append(args, unescape(lx.src[start:lx.i-1]))
			switch ch {
			case ';':
				return args, endDirective, nil
			case '{':
				return args, endBlockStart, nil
			}
			found = false
		}
	}
}

// unescape applies nginx's backslash rules to a word: \" \' \\ lose the
// backslash, \t \r \n become control characters, any other backslash stays.
func unescape(b []byte) string {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			switch b[i+1] {
			case '"', '\'', '\\':
				out = append(out, b[i+1])
				i++
				continue
			case 't':
				out = append(out, '\t')
				i++
				continue
			case 'r':
				out = append(out, '\r')
				i++
				continue
			case 'n':
				out = append(out, '\n')
				i++
				continue
			}
		}
		out = append(out, b[i])
	}
	return string(out)
}

// parseFile reads src into a tree of directives, or returns the first
// syntax error. As nginx, every file must be balanced on its own: a "}"
// without its "{" is `unexpected "}"`, a missing "}" is
// `unexpected end of file, expecting "}"`.
func parseFile(file string, src []byte) ([]*directive, *Error) {
	lx := &lexer{file: file, src: src, line: 1}
	dirs, _, err := lx.parseBlock(0)
	return dirs, err
}

func (lx *lexer) parseBlock(depth int) ([]*directive, Pos, *Error) {
	var dirs []*directive
	for {
		args, end, err := lx.next()
		if err != nil {
			return nil, Pos{}, err
		}
		switch end {
		case endBlockDone:
			if depth == 0 {
				return nil, Pos{}, lx.errorf(`unexpected "}"`)
			}
			return dirs, Pos{lx.file, lx.line}, nil
		case endFile:
			if depth > 0 {
				return nil, Pos{}, lx.errorf(`unexpected end of file, expecting "}"`)
			}
			return dirs, Pos{}, nil
		}
		d := &directive{name: args[0], args: args[1:], pos: Pos{lx.file, lx.line}}
		dirs = append(dirs, d)
		if end == endBlockStart {
			if depth+1 > maxBlockDepth {
				return nil, Pos{}, &Error{Pos: d.pos, Directive: d.name,
					Msg: fmt.Sprintf("blocks are nested more than %d deep", maxBlockDepth)}
			}
			d.hasBlock = true
			d.block, d.end, err = lx.parseBlock(depth + 1)
			if err != nil {
				return nil, Pos{}, err
			}
		}
	}
}
