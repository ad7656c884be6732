"""Shared reading of SkyPilot-format catalog CSVs, for cloud plugins.

Column order differs per cloud, so columns are always found by header name.
"""

from __future__ import annotations

import csv
import operator
from collections.abc import Iterator
from pathlib import Path

from skyk.catalog.offering import Offering
from skyk.errors import CatalogError


def read_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    """Yield each data row of ``path`` as the values of ``columns``, in that order.

    Extra trailing fields (Azure's unquoted ``V1,V2``) are ignored. Raises
    ``CatalogError`` naming the file when it is missing or lacks a column.
    """
    try:
        handle = open(path, newline="", encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(
            f"catalog file {path} not found",
            hint="run 'skyk catalog refresh' or point SKYK_CATALOG_DIR at a catalog directory",
        ) from None
    except OSError as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise CatalogError(f"catalog file {path} is empty",
                               hint="run 'skyk catalog refresh --force'")
        missing = [c for c in columns if c not in header]
        if missing:
            raise CatalogError(
                f"catalog file {path} lacks column(s) {', '.join(missing)}",
                hint="the file must be in SkyPilot's v8 catalog format",
            )
        index = [header.index(c) for c in columns]
        # itemgetter of one index returns a bare value; callers always get a tuple.
        pick = operator.itemgetter(*index) if len(index) > 1 else (lambda r, i=index[0]: (r[i],))
        width = max(index) + 1
        for row in reader:
            if len(row) < width:
                if not row:
                    continue
                raise CatalogError(
                    f"{path}:{reader.line_num}: expected at least {width} fields, got {len(row)}",
                    hint="the catalog file looks truncated; run 'skyk catalog refresh --force'")
            yield pick(row)


def price(text: str) -> float | None:
    """Parse a price cell; an empty cell means 'no quote' and gives None."""
    return float(text) if text else None


#: The columns every SkyPilot-format ``vms.csv`` has, in the order read_offerings uses.
VM_COLUMNS = ("InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB",
              "Price", "SpotPrice", "Region")


def read_offerings(path: Path, cloud: str, zone_column: str | None = None) -> list[Offering]:
    """Read a SkyPilot-format ``vms.csv`` whose rows are whole offerings.

    Suits clouds that price the accelerator with the instance (AWS, Azure, and
    most third-party catalogs). ``zone_column`` names the zone column, if the
    cloud prices per zone. Rows without an instance type are skipped.
    """
    columns = VM_COLUMNS + ((zone_column,) if zone_column else ())
    out = []
    append = out.append
    for row in read_rows(path, columns):
        instance, accelerator, count, vcpus, memory, on_demand, spot, region = row[:8]
        if not instance:
            continue
        append(Offering(cloud, instance, float(vcpus or 0), float(memory or 0), region,
                        row[8] if zone_column else None, price(on_demand), price(spot),
                        # A count without a name (Azure's FPGA sizes) is no accelerator we rank.
                        accelerator or None, float(count) if count and accelerator else 0.0))
    return out
