import random, json, sys, ipaddress
r = random.Random(int(sys.argv[1]))
mode = sys.argv[2]
def v4():
    return '%d.%d.%d.%d' % (r.choice([10, 127, 192, 255, 0]), r.choice([0, 1, 255]), r.randint(0, 3), r.choice([0, 1, 2, 128, 255]))
def v6():
    return r.choice(['2001:db8::', '2001:db8:0:1::', '::', 'fe80::', '::ffff:10.0.0.0', '2001:db8::ff']) + ''
lines = []
if mode == 'cidr':
    for i in range(r.randint(3, 30)):
        if r.random() < 0.7:
            net = '%s/%d' % (ipaddress.ip_network(v4() + '/%d' % r.randint(0, 32), strict=False).network_address, r.randint(0, 32))
            net = str(ipaddress.ip_network(net, strict=False))
        else:
            net = str(ipaddress.ip_network(v6() + '/%d' % r.choice([0, 16, 32, 48, 64, 96, 104, 127, 128]), strict=False))
        c = r.random()
        if c < 0.15:
            lines.append('delete %s' % net)
        elif c < 0.2:
            lines.append('default d%d' % i)
        else:
            lines.append('%s v%d' % (net, i))
    if r.random() < 0.5: lines.append('255.255.255.255 bcast')
    block = 'geo $k $g { %s; }' % '; '.join(lines)
else:
    taken = []
    for i in range(r.randint(3, 30)):
        a = int(ipaddress.ip_address(v4())); b = a + r.choice([0, 1, 5, 255, 65535, 70000, 200000])
        b = min(b, 0xfffffffe)
        s, e = str(ipaddress.ip_address(a)), str(ipaddress.ip_address(b))
        c = r.random()
        if c < 0.15 and taken:
            lines.append('delete %s' % r.choice(taken))
        elif c < 0.2:
            lines.append('default d%d' % i)
        else:
            lines.append('%s-%s v%d' % (s, e, i)); taken.append('%s-%s' % (s, e))
    block = 'geo $k $g { ranges; %s; }' % '; '.join(lines)
keys = set()
for _ in range(110):
    c = r.random()
    if c < 0.6:
        a = int(ipaddress.ip_address(v4())) + r.choice([0, 1, -1, 3, 70000])
        keys.add(str(ipaddress.ip_address(a % (1 << 32))))
    elif c < 0.85:
        keys.add(str(ipaddress.ip_address(int(ipaddress.ip_address(v6())) + r.choice([0, 1, 1 << 70]))))
    else:
        keys.add(r.choice(['', 'foo', '1.2.3', '1..2.3', '::ffff:10.0.0.1', '::ffff:10.1.2.3', '10.0.0.1 ', 'fe80::1%eth0', ':1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8', '::1.2.3.4', '1::2::3', '255.255.255.255', '10.00.0.01']))
json.dump({'block': block, 'ret': '"$g"', 'keys': sorted(keys)}, sys.stdout)
