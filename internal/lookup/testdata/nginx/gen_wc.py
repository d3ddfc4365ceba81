import random, json, sys
r = random.Random(int(sys.argv[1]))
labels = ['a', 'b', 'c', 'www', 'ex', 'A']
def dom(n):
    return '.'.join(r.choice(labels) for _ in range(n))
E, H, T = set(), set(), set()
entries = []
for i in range(r.randint(3, 25)):
    kind = r.choice(['exact', 'dot', 'star', 'tail', 'exact'])
    d = dom(r.randint(1, 3))
    low = d.lower()
    if kind == 'exact':
        if low in E: continue
        E.add(low); entries.append('%s v%d' % (d, i))
    elif kind == 'dot':
        if low in E or low in H: continue
        E.add(low); H.add(low); entries.append('.%s v%d' % (d, i))
    elif kind == 'star':
        if low in H: continue
        H.add(low); entries.append('*.%s v%d' % (d, i))
    else:
        if low + '.' in T: continue
        T.add(low + '.'); entries.append('%s.* v%d' % (d, i))
if r.random() < 0.3:
    entries.append('~^(a|b)\\.(.*)$ re:$1:$2')
block = 'map $k $x { hostnames; default D; %s; }' % '; '.join(entries)
keys = sorted(set(dom(r.randint(0, 4)) + r.choice(['', '', '.']) for _ in range(120)))
json.dump({'block': block, 'ret': '"$x"', 'keys': keys}, sys.stdout)
