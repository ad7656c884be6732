"""Hook specifications: the whole contract between the kernel and its plugins.

A plugin is a module (or object) named by an entry point in one of the groups
listed in :mod:`skyk.plugins.kinds`; its functions are marked with
``skyk.hookimpl``. Hooks that register *named* objects (clouds, runtimes,
policies) return lists; the kernel rejects two objects with one name, naming
both plugins. Hooks must not touch the network unless their docstring says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from skyk.catalog.offering import Offering
    from skyk.jobs.recovery import RecoveryStrategy
    from skyk.provision.cloud import Cloud
    from skyk.runtime import Runtime
    from skyk.serve.policies import LoadBalancingPolicy, ScalingPolicy
    from skyk.storage.store import Store

PROJECT = "skyk"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------
# Catalog
# -------------------------------------------------------------------------


@hookspec
def skyk_catalog_offerings(catalog_dir: Path) -> Iterable[Offering] | None:
    """Return every offering this plugin's cloud sells, read from its catalog.

    Called once per command that ranks resources (``launch``, ``show-gpus``),
    for each enabled cloud plugin separately, so that one cloud's broken
    catalog does not hide the others.

    :param catalog_dir: The catalog directory (``SKYK_CATALOG_DIR``, default
        ``~/.skyk/catalogs``). A cloud reads its own files below it, by
        convention ``<catalog_dir>/<cloud>/vms.csv``.
    :return: The offerings, with canonical accelerator names and prices in
        USD/hour. Raise :class:`skyk.errors.CatalogError` when the catalog
        is missing or malformed; the kernel reports it for this cloud only.

    What this returns is cached (:mod:`skyk.catalog.cache`), keyed by the
    files ``skyk_catalog_files`` names and by the plugin package's source
    files; so it must depend on nothing else (no environment variable, no
    network). A plugin that names no files is called every time.

    All results are collected.
    """


@hookspec
def skyk_catalog_files() -> list[str] | None:
    """Return the catalog files this plugin reads, relative to the catalog dir.

    Called by ``skyk catalog refresh`` to know what to fetch from the catalog
    source (for example ``["aws/vms.csv", "aws/images.csv"]``). A cloud whose
    offerings need no files (the local cloud) returns nothing.

    All results are collected.
    """


# -------------------------------------------------------------------------
# Provision
# -------------------------------------------------------------------------


@hookspec
def skyk_clouds() -> list[Cloud] | None:
    """Return the clouds this plugin provides, as :class:`skyk.provision.cloud.Cloud` objects.

    Called when the kernel needs to check credentials or provision: ``skyk
    check``, ``skyk launch``. Each cloud is looked up by its ``name``; two
    plugins returning the same name is an error naming both.

    All results are collected.
    """


@hookspec
def skyk_stores() -> list[Store] | None:
    """Return the object stores this plugin provides, as :class:`skyk.storage.store.Store` objects.

    Called when a task's ``file_mounts`` name a bucket URL or a storage
    object, and by ``skyk storage``. Each store is looked up by its ``name``
    (``s3``, ``gcs``, ``azure``); two plugins returning the same name is an
    error naming both. Building a store must not import its SDK or use the
    network: do that in its verbs.

    All results are collected.
    """


# -------------------------------------------------------------------------
# Runtime
# -------------------------------------------------------------------------


@hookspec
def skyk_runtimes() -> list[Runtime] | None:
    """Return the inference runtimes this plugin provides (:class:`skyk.runtime.Runtime`).

    Called when a task's ``runtime:`` section names an engine
    (``runtime.engine: NAME``; see :mod:`skyk.runtime.resolve`), when a
    service controller asks for its engine's queue metrics, and by ``skyk
    plugins``. Runtimes are looked up by ``name``; duplicates are an error
    naming both plugins. A runtime only builds commands: it must not import
    its engine.

    All results are collected.
    """


# -------------------------------------------------------------------------
# Scaling policy
# -------------------------------------------------------------------------


@hookspec
def skyk_scaling_policies() -> list[ScalingPolicy] | None:
    """Return the autoscaling policies this plugin provides.

    Called by a service controller when it starts, to find the policy its
    service names. Policies are looked up by ``name``; duplicates are an
    error naming both plugins.

    All results are collected.
    """


@hookspec
def skyk_load_balancing_policies() -> list[LoadBalancingPolicy] | None:
    """Return the load-balancing policies this plugin provides.

    Called by the router when it starts, to find the policy named by the
    service's ``load_balancing_policy``. Policies are looked up by ``name``;
    duplicates are an error naming both plugins.

    All results are collected.
    """


# -------------------------------------------------------------------------
# Managed jobs
# -------------------------------------------------------------------------


@hookspec
def skyk_recovery_strategies() -> list[RecoveryStrategy] | None:
    """Return the recovery strategies for managed jobs this plugin provides.

    Called by ``skyk jobs launch`` (to check the strategy a job names) and
    by the jobs controller when a job's nodes are taken away. Strategies are
    looked up by ``name`` (upper case, as ``job_recovery: NAME`` gives it);
    duplicates are an error naming both plugins.

    All results are collected.
    """
