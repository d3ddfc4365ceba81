import atexit, json, os, shutil, socket, subprocess, sys, tempfile, time

PREFIX = tempfile.mkdtemp(prefix='ngx-lookup-')
os.makedirs(PREFIX + '/logs')
atexit.register(shutil.rmtree, PREFIX, True)

BASE = 21000

def q(s):
    return '"' + s.replace('\\', '\\\\').replace('"', '\\"').replace('$', '${dollar}') + '"'

def run(block, ret, keys, extra=''):
    """block: nginx stream text using $k as the looked-up key; ret: return template."""
    lines = ['load_module /usr/lib/nginx/modules/ngx_stream_module.so;',  # Debian's dynamic stream module
             'error_log %s/diff.err;' % PREFIX, 'pid %s/diff.pid;' % PREFIX,
             'daemon off;', 'master_process off;', 'events {}', 'stream {',
             '  geo $dollar { default "$"; }', extra]
    lines.append('  map $server_port $k {')
    for i, k in enumerate(keys):
        lines.append('    %d %s;' % (BASE + i, q(k)))
    lines.append('  }')
    lines.append(block)
    lines.append('  server {')
    for i in range(len(keys)):
        lines.append('    listen 127.0.0.1:%d;' % (BASE + i))
    lines.append('    return %s;' % ret)
    lines.append('  }')
    lines.append('}')
    open(PREFIX + '/diff.conf', 'w').write('\n'.join(lines) + '\n')
    p = subprocess.Popen(['nginx', '-p', PREFIX, '-c', PREFIX + '/diff.conf'],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = []
    try:
        for i in range(len(keys)):
            for attempt in range(100):
                try:
                    s = socket.create_connection(('127.0.0.1', BASE + i), timeout=2)
                    break
                except OSError:
                    if p.poll() is not None:
                        raise SystemExit('nginx exited: ' + p.stderr.read().decode() + open(PREFIX + '/diff.err').read()[-2000:])
                    time.sleep(0.05)
            data = b''
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
            s.close()
            out.append(data.decode('latin-1'))
    finally:
        p.kill()
        p.wait()
    return out

if __name__ == '__main__':
    spec = json.load(open(sys.argv[1]))
    res = run(spec['block'], spec['ret'], spec['keys'], spec.get('extra', ''))
    json.dump(list(zip(spec['keys'], res)), sys.stdout, indent=0)
