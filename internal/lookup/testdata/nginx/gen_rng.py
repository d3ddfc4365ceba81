import random, json, sys, ipaddress
r = random.Random(int(sys.argv[1]))
def A(x): return str(ipaddress.ip_address(x))
base = r.choice([0x0a000000, 0x7f000000, 0x0afffff0])
lines, taken = [], []
pieces = []  # existing (a,b)
for i in range(r.randint(3, 25)):
    c = r.random()
    if pieces and c < 0.45:
        # inside / shared start / shared end / equal of an existing piece
        a, b = r.choice(pieces)
        k = r.choice(['in', 'start', 'end', 'eq'])
        if b - a < 2: k = 'eq'
        if k == 'in': s, e = a + 1, b - 1
        elif k == 'start': s, e = a, a + (b - a) // 2
        elif k == 'end': s, e = a + (b - a) // 2, b
        else: s, e = a, b
    else:
        s = base + r.randint(0, 300000); e = s + r.choice([0, 1, 10, 255, 65535, 70000, 140000])
    e = min(e, 0xfffffffe)
    if r.random() < 0.12 and taken:
        lines.append('delete ' + r.choice(taken)); continue
    if r.random() < 0.05:
        lines.append('default d%d' % i); continue
    lines.append('%s-%s v%d' % (A(s), A(e), i)); taken.append('%s-%s' % (A(s), A(e))); pieces.append((s, e))
block = 'geo $k $g { ranges; %s; }' % '; '.join(lines)
keys = set()
for _ in range(110):
    if pieces and r.random() < 0.7:
        a, b = r.choice(pieces); x = r.choice([a, b, a - 1, b + 1, (a + b) // 2, a + 1])
    else:
        x = base + r.randint(0, 400000)
    keys.add(A(x % (1 << 32)))
keys.update(['::ffff:' + A(base + 5), '2001:db8::1', 'junk', '255.255.255.255'])
json.dump({'block': block, 'ret': '"$g"', 'keys': sorted(keys)}, sys.stdout)
