"""The controller's decisions: spot and on-demand mixes, update modes, what the router gets."""

from __future__ import annotations

from skyk.serve import state
from skyk.serve.plan import SpotPolicy, plan_version, published, retire_old
from skyk.serve.state import ReplicaRecord


def replica(id_: int, status: str = state.READY, version: int = 1, spot: bool = False) -> ReplicaRecord:
    return ReplicaRecord("svc", id_, version, f"svc-{id_}", status, f"http://10.0.0.{id_}:8080", 0.0, 0.0, 0,
                         None, spot)


def test_on_demand_only_launches_the_missing_and_retires_the_least_useful():
    plan = plan_version([replica(1)], 3, SpotPolicy())
    assert (plan.launch_spot, plan.launch_ondemand, plan.retire) == (0, 2, [])
    alive = [replica(1), replica(2, state.STARTING), replica(3), replica(4)]
    assert [r.id for r in plan_version(alive, 2, SpotPolicy()).retire] == [2, 4]


def test_with_targets_per_accelerator_the_smallest_shares_retire_first():
    # Replicas 1 and 3 on an H100 (target 20), 2 and 4 on an A100 (10): two must go.
    share = {1: 20.0, 2: 10.0, 3: 20.0, 4: 10.0}
    alive = [replica(1), replica(2), replica(3), replica(4)]
    plan = plan_version(alive, 2, SpotPolicy(), share=lambda r: share[r.id])
    assert sorted(r.id for r in plan.retire) == [2, 4]


def test_spot_with_base_on_demand_replicas():
    spot = SpotPolicy(use_spot=True, base_ondemand=1)
    plan = plan_version([], 3, spot)
    assert (plan.launch_spot, plan.launch_ondemand) == (2, 1)
    # The base never exceeds the target.
    assert (plan_version([], 1, SpotPolicy(True, 2)).launch_ondemand, plan_version([], 1, SpotPolicy(True, 2))
            .launch_spot) == (1, 0)


def test_dynamic_fallback_covers_spot_replicas_that_are_not_ready():
    spot = SpotPolicy(use_spot=True, base_ondemand=1, dynamic_fallback=True)
    # One spot replica preempted and relaunching: an extra on-demand one stands in.
    alive = [replica(1), replica(2, spot=True), replica(3, state.PROVISIONING, spot=True)]
    plan = plan_version(alive, 3, spot)
    assert (plan.launch_spot, plan.launch_ondemand, plan.retire) == (0, 1, [])
    # Once the spot replicas are ready, the stand-in goes again.
    alive = [replica(1), replica(2, spot=True), replica(3, spot=True), replica(4)]
    assert [r.id for r in plan_version(alive, 3, spot).retire] == [4]


def test_rolling_retires_old_replicas_one_for_one():
    old = [replica(1), replica(2), replica(3, state.NOT_READY)]
    assert [r.id for r in retire_old(old, 0, 3, state.ROLLING)] == []
    assert [r.id for r in retire_old(old, 1, 3, state.ROLLING)] == [3]
    assert [r.id for r in retire_old(old, 2, 3, state.ROLLING)] == [3, 2]
    assert len(retire_old(old, 3, 3, state.ROLLING)) == 3


def test_blue_green_keeps_every_old_replica_until_the_new_version_is_complete():
    old = [replica(1), replica(2)]
    assert retire_old(old, 1, 2, state.BLUE_GREEN) == []
    assert retire_old(old, 2, 2, state.BLUE_GREEN) == old


def test_published_replicas_by_mode():
    replicas = [replica(1), replica(2), replica(3, version=2), replica(4, state.STARTING, version=2)]
    assert [r.id for r in published(replicas, 2, 2, state.ROLLING)] == [1, 2, 3]
    assert [r.id for r in published(replicas, 2, 2, state.BLUE_GREEN)] == [1, 2]
    complete = replicas[:3] + [replica(4, version=2)]
    assert [r.id for r in published(complete, 2, 2, state.BLUE_GREEN)] == [1, 2, 3, 4]
    # Nothing old left ready: the new version serves, whatever the mode.
    assert [r.id for r in published(replicas[2:], 2, 2, state.BLUE_GREEN)] == [3]


def test_the_cli_offers_exactly_the_update_modes_the_controller_knows():
    from skyk.cli.serve import UPDATE_MODES

    assert UPDATE_MODES == state.UPDATE_MODES


def test_a_state_database_from_before_versions_and_endpoint_hosts_is_upgraded(tmp_path, monkeypatch):
    import sqlite3

    from skyk.serve import state
    from skyk.state import db

    monkeypatch.setenv("SKYK_HOME", str(tmp_path))
    old = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    for script in db.MIGRATIONS[:2]:  # the schema services first shipped with
        old.executescript(script)
    old.execute("INSERT INTO services (name, version, status, task, created_at, router_port)"
                " VALUES ('web', 1, 'READY', '{\"run\": \"serve\"}', 1.0, 30001)")
    old.execute("PRAGMA user_version = 2")
    old.close()

    conn = db.connect()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == db.SCHEMA_VERSION
    record = state.get_service(conn, "web")
    # Published before the endpoint had a host of its own: loopback, as it was then.
    assert record.router_host is None and record.endpoint == "127.0.0.1:30001"
    assert state.version(conn, "web", 1) == ({"run": "serve"}, state.ROLLING)
