"""nginx/nginx.conf for given upstream addresses and listen address (used by scripts/stack and
tests/deploy): everything else in the file stays as it is.

Usage: python scripts/render_nginx.py LISTEN UPSTREAM [UPSTREAM ...] > nginx.conf
"""

from __future__ import annotations

import sys
from pathlib import Path

CONF = Path(__file__).resolve().parents[1] / "nginx" / "nginx.conf"


def render(upstreams: list[str], listen: str) -> str:
    text = CONF.read_text()
    head, rest = text.split("# upstreams: begin\n", 1)
    _, tail = rest.split("# upstreams: end\n", 1)
    servers = "".join(f"        server {u} max_fails=1 fail_timeout=2s;\n" for u in upstreams)
    rendered = head + "# upstreams: begin\n" + servers + "        # upstreams: end\n" + tail
    if "        listen 80;\n" not in rendered:
        raise SystemExit("nginx/nginx.conf has no 'listen 80;' line to replace")
    return rendered.replace("        listen 80;\n", f"        listen {listen};\n")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    sys.stdout.write(render(sys.argv[2:], sys.argv[1]))
