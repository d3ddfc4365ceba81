import json, sys, subprocess
for f in sys.argv[1:]:
    spec = json.load(open(f))
    out = subprocess.run(['python3', 'diff.py', f], capture_output=True, text=True, check=True).stdout
    spec['nginx'] = [v for k, v in json.loads(out)]
    assert len(spec['nginx']) == len(spec['keys'])
    json.dump(spec, open(f, 'w'), indent=1)
