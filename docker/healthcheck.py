"""The image's HEALTHCHECK: exit 0 when Custos answers its readiness probe, else 1.

Slim images have no curl; this needs only the standard library. The URL is the
metrics port's /readyz (HSM, store and the other health components pass);
set CUSTOS_HEALTHCHECK_URL for another port, or /healthz for liveness only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9464/readyz"


def main() -> int:
    url = os.environ.get("CUSTOS_HEALTHCHECK_URL", DEFAULT_URL)
    if not url.startswith("http://"):
        print(f"healthcheck: {url} is not an http:// URL", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=4) as reply:  # noqa: S310 - http:// checked above
            return 0 if reply.status == 200 else 1
    except urllib.error.HTTPError as error:  # 503: not ready, with the failing components
        print(f"healthcheck: {error.code} {error.read(512).decode(errors='replace')}", end="")
        return 1
    except OSError as error:
        print(f"healthcheck: {url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
