"""The optimizer ranks feasible offerings by price, preference, pins and failures."""

from __future__ import annotations

import pytest
from skyk.catalog.offering import Offering
from skyk.catalog.store import Catalog
from skyk.errors import NoFeasibleResources
from skyk.optimizer.ranking import rank
from skyk.spec.resources import Requirement
from skyk.spec.values import Quantity


def off(cloud, instance, price, spot=None, acc=None, count=0.0, region="r1", zone=None,
        vcpus=8.0, memory=32.0):
    return Offering(cloud, instance, vcpus, memory, region, zone, price, spot, acc, float(count))


CATALOG = Catalog({
    "a": [off("a", "a.gpu8", 20.0, 5.0, "A100", 8, zone="r1-z1"),
          off("a", "a.gpu8", 19.0, 6.0, "A100", 8, region="r2", zone="r2-z1"),
          off("a", "a.l4", 1.0, None, "L4", 1),
          off("a", "a.cpu", 0.4, 0.1, vcpus=8, memory=32),
          off("a", "a.tiny", 0.1, 0.02, vcpus=2, memory=4)],
    "b": [off("b", "b.gpu8", 25.0, 3.0, "A100", 8),
          off("b", "b.t4", 0.5, 0.2, "T4", 1),
          off("b", "b.big", 3.0, 1.0, vcpus=96, memory=384)],
})
A100_8 = Requirement(accelerator="A100", accelerator_count=8)


def test_unordered_picks_the_cheapest_anywhere():
    plan = rank(CATALOG, [A100_8])
    assert (plan.best.offering.instance_type, plan.best.offering.region) == ("a.gpu8", "r2")
    assert [c.hourly_cost for c in plan.candidates] == [19.0, 20.0, 25.0]
    assert plan.considered == 3


def test_spot_ranks_by_spot_price_and_skips_offers_without_one():
    plan = rank(CATALOG, [Requirement(accelerator="A100", accelerator_count=8, use_spot=True)])
    assert plan.best.offering.cloud == "b" and plan.best.hourly_cost == 3.0
    with pytest.raises(NoFeasibleResources, match="no spot price for L4"):
        rank(CATALOG, [Requirement(accelerator="L4", accelerator_count=1, use_spot=True)])


def test_ordered_takes_the_first_feasible_preference():
    prefs = [Requirement(accelerator="H100", accelerator_count=1),
             Requirement(accelerator="L4", accelerator_count=1),
             Requirement(accelerator="T4", accelerator_count=1)]
    assert rank(CATALOG, prefs, ordered=True).best.offering.instance_type == "a.l4"
    assert rank(CATALOG, prefs, ordered=False).best.offering.instance_type == "b.t4"


def test_num_nodes_multiplies_cost():
    plan = rank(CATALOG, [A100_8], num_nodes=3)
    assert plan.best.hourly_cost == pytest.approx(57.0)


@pytest.mark.parametrize("pins, expected", [
    ({"cloud": "b"}, ("b", "b.gpu8")),
    ({"region": "r1"}, ("a", "a.gpu8")),
    ({"zone": "r1-z1"}, ("a", "a.gpu8")),
    ({"instance_type": "b.gpu8"}, ("b", "b.gpu8")),
])
def test_pins(pins, expected):
    req = Requirement(accelerator="A100", accelerator_count=8, **pins)
    best = rank(CATALOG, [req]).best.offering
    assert (best.cloud, best.instance_type) == expected
    for key, value in pins.items():
        assert getattr(best, key) == value


def test_max_hourly_cost_applies_to_all_nodes():
    req = Requirement(accelerator="A100", accelerator_count=8, max_hourly_cost=40.0)
    assert [c.hourly_cost for c in rank(CATALOG, [req], num_nodes=2).candidates] == [38.0, 40.0]
    with pytest.raises(NoFeasibleResources, match="over max_hourly_cost"):
        rank(CATALOG, [Requirement(accelerator="A100", accelerator_count=8, max_hourly_cost=10.0)])


def test_blocked_locations_fail_over_to_the_next_cheapest():
    plan = rank(CATALOG, [A100_8], blocked={("a", "r2", "r2-z1", None)})
    assert plan.best.offering.zone == "r1-z1"
    plan = rank(CATALOG, [A100_8], blocked={("a", None, None, None)})
    assert plan.best.offering.cloud == "b"
    with pytest.raises(NoFeasibleResources, match="failed to provision"):
        rank(CATALOG, [A100_8], blocked={("a", None, None, None), ("b", None, None, None)})


def test_cpu_requests_and_cloud_defaults():
    plan = rank(CATALOG, [Requirement(cpus=Quantity(16, True))])
    assert plan.best.offering.instance_type == "b.big"
    # A task that sizes nothing gets each cloud's default floor (8 vCPUs, 32 GiB here).
    plan = rank(CATALOG, [Requirement()], defaults={"a": (8, 32), "b": (8, 32)})
    assert plan.best.offering.instance_type == "a.cpu"
    plan = rank(CATALOG, [Requirement()])
    assert plan.best.offering.instance_type == "a.tiny"


def test_no_fit_explains_per_cloud():
    with pytest.raises(NoFeasibleResources) as info:
        rank(CATALOG, [Requirement(accelerator="A100", accelerator_count=3)])
    message = info.value.message
    assert "a: A100 comes only in counts 8" in message
    assert "b: A100 comes only in counts 8" in message
    assert "show-gpus" in info.value.hint
    with pytest.raises(NoFeasibleResources, match=r"a: none with 500\+ vCPUs \(largest: 8\)"):
        rank(CATALOG, [Requirement(cloud="a", cpus=Quantity(500, True))])
    with pytest.raises(NoFeasibleResources, match="no T4"):
        rank(CATALOG, [Requirement(cloud="a", accelerator="T4", accelerator_count=1)])


def test_catalog_errors_are_reasons_too():
    catalog = Catalog({"a": CATALOG.of_cloud("a")}, errors={"c": "catalog file x not found"})
    with pytest.raises(NoFeasibleResources, match="c: catalog file x not found"):
        rank(catalog, [Requirement(accelerator="T4", accelerator_count=1)])
