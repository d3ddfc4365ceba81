# Writes split-N.json: split_clients blocks over the same 134 keys.
import json, random
r = random.Random(7)
keys = sorted(set([''.join(r.choice('abc.0123456789') for _ in range(r.randint(0, 12))) for _ in range(150)]))
blocks = [
 'split_clients "${k}AAA" $s { 0.5% p0; 2.0% p1; 10% p2; 37.55% p3; * rest; }',
 'split_clients $k $s { 33.33% a; 33.33% b; 33.34% c; }',
 'split_clients $k $s { 50% a; 25% b; }',
 'split_clients $k $s { 0.01% a; 99.99% b; }',
]
for i, b in enumerate(blocks):
    json.dump({'block': b, 'ret': '"$s"', 'keys': keys}, open('split-%d.json' % i, 'w'))
