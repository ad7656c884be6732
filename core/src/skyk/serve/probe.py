"""Readiness probes, as SkyServe's ``service.readiness_probe`` defines them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from skyk.spec.service import ReadinessProbe


def probe(base_url: str, spec: ReadinessProbe) -> tuple[bool, str]:
    """Probe a replica once; return (ready, why not).

    GET the probe path, or POST ``post_data`` (JSON when it is a mapping);
    only a 200 within ``timeout_seconds`` counts as ready.
    """
    data = None
    headers = dict(spec.headers or {})
    if spec.post_data is not None:
        if isinstance(spec.post_data, str):
            data = spec.post_data.encode()
        else:
            data = json.dumps(spec.post_data).encode()
            headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(base_url.rstrip("/") + spec.path, data=data, headers=headers,
                                     method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=spec.timeout_seconds) as response:
            response.read(65536)
            return response.status == 200, f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return False, str(getattr(exc, "reason", exc))
