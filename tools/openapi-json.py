#!/usr/bin/env python3
"""openapi-json.py — docs/openapi.yaml to the JSON that parley.fcgi serves.

    tools/openapi-json.py [docs/openapi.yaml] > docs/openapi.json
    tools/openapi-json.py --check [docs/openapi.yaml] [docs/openapi.json]

docs/openapi.yaml is the source; docs/openapi.json is its generated twin,
committed beside it, which the build embeds (tools/embed-text.sh) so that
building needs neither Python nor the network. --check exits 1 when the
committed JSON is not what the YAML gives (t0870-openapi runs it).

The YAML must stay inside the JSON data model: mapping keys are strings
(quote status codes: '200'), values are strings, numbers, booleans, null,
lists and mappings; no dates, no anchors merged into non-mappings. Anything
else is refused with its path, so the JSON is an exact image of the YAML.
Needs python3-yaml (Debian package)."""
import json
import sys

import yaml


def check(node, path):
    if isinstance(node, dict):
        for k, v in node.items():
            if not isinstance(k, str):
                raise SystemExit(f"openapi-json: {path}: key {k!r} is not a string (quote it)")
            check(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check(v, f"{path}/{i}")
    elif node is None or isinstance(node, (str, bool, int, float)):
        return
    else:
        raise SystemExit(f"openapi-json: {path}: {type(node).__name__} is not JSON (quote it)")


def render(src):
    with open(src, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    check(doc, "#")
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def main(argv):
    if argv and argv[0] == "--check":
        src = argv[1] if len(argv) > 1 else "docs/openapi.yaml"
        dst = argv[2] if len(argv) > 2 else "docs/openapi.json"
        want = render(src)
        with open(dst, encoding="utf-8") as f:
            have = f.read()
        if have != want:
            sys.stderr.write(f"openapi-json: {dst} is not the JSON of {src}: "
                             f"run tools/openapi-json.py {src} > {dst}\n")
            return 1
        return 0
    src = argv[0] if argv else "docs/openapi.yaml"
    sys.stdout.write(render(src))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
