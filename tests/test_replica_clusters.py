"""A service's replica clusters are the service's own: hidden from ``status`` and ``down -a``,
and ``down`` of one names the service and the command that replaces it."""

from __future__ import annotations

import json

from lifecycle_helpers import status_json
from serve_helpers import needs_router, service_json, wait_ready

pytestmark = needs_router

TASK = """\
service:
  readiness_probe: /index.html
  replicas: 1
resources:
  ports: 8080
run: |
  echo "replica $SKYK_SERVE_REPLICA_ID" > index.html
  exec python3 -m http.server 8080 --bind 0.0.0.0
"""


def test_replica_clusters_are_hidden_from_status_and_down_all(skyk, serve_web):
    serve_web(TASK)
    [replica] = wait_ready(skyk, "web", 1)
    assert skyk("launch", "-c", "mine", "-d", "echo hi", "-y").returncode == 0
    cluster = f"web-{replica['id']}"

    assert [c["name"] for c in status_json(skyk)] == ["mine"]
    assert cluster not in skyk("status").stdout
    shown = {c["name"]: c for c in json.loads(skyk("status", "-a", "-o", "json").stdout)}
    assert shown[cluster]["owner"] == {"service": "web", "replica_id": replica["id"]}
    assert shown["mine"]["owner"] is None
    table = skyk("status", "--all").stdout
    assert "OWNER" in table and f"service web (replica {replica['id']})" in table
    assert skyk("status", cluster).returncode == 0  # asked for by name: shown

    named = skyk("down", cluster, "-y")
    assert named.returncode != 0 and "Traceback" not in named.stderr
    line = named.stderr.strip().splitlines()[-1]
    assert f"cluster {cluster} is replica {replica['id']} of service web" in line
    assert f"skyk serve down web --replica-id {replica['id']}" in line

    down_all = skyk("down", "-a", "-y")
    assert down_all.returncode == 0, down_all.stderr
    assert "Skipping 1 cluster(s) of service web" in down_all.stderr
    assert status_json(skyk) == []
    assert [c["name"] for c in json.loads(skyk("status", "-a", "-o", "json").stdout)] == [cluster]
    service = service_json(skyk, "web")
    assert service["status"] == "READY"
    assert [(r["id"], r["status"]) for r in service["replicas"]] == [(replica["id"], "READY")]
