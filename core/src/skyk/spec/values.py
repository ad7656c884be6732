"""Parsers for the scalar forms the task YAML accepts (counts, ports, infra...).

Each raises ``ValueError("message | hint: ...")``; the spec error formatter
splits that into a one-line message and a hint.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# Digits are [0-9]: \d would also take '²' or '٣', which int() and float() refuse or misread.
_NUMBER = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(\+?)\s*$")
_COUNT = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*$")
_ACCELERATOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SAFE_NAME = re.compile(r"^[A-Za-z]([-_.A-Za-z0-9]*[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(r"^\s*([0-9]+)\s*([smhd]?)\s*$")
_PORT = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?")

#: The most vCPUs, or GiB of memory, a request may name (far beyond any machine).
MAX_QUANTITY = 1_000_000
#: The most accelerators of one kind a request may name.
MAX_ACCELERATORS = 10_000
#: The longest idle time autostop takes, in minutes (ten years).
MAX_MINUTES = 10 * 525_600
#: The longest name one path component may have, in bytes (Linux NAME_MAX).
NAME_MAX = 255
#: The longest path, in bytes (Linux PATH_MAX less the terminating NUL).
PATH_MAX = 4095


@dataclass(frozen=True)
class Quantity:
    """A vCPU or memory amount: exactly ``value``, or at least it (``4+``)."""

    value: float
    at_least: bool

    def admits(self, amount: float) -> bool:
        """Return whether an offering with ``amount`` satisfies this request."""
        return amount >= self.value if self.at_least else abs(amount - self.value) < 1e-6

    def __str__(self) -> str:
        text = f"{self.value:g}"
        return text + "+" if self.at_least else text


@dataclass(frozen=True)
class Accelerator:
    """An accelerator request: a name as the user wrote it, and a count."""

    name: str
    count: float

    def __str__(self) -> str:
        count = f"{self.count:g}"
        return f"{self.name}:{count}"


@dataclass(frozen=True)
class AcceleratorChoice:
    """One or more acceptable accelerators; ``ordered`` means by preference."""

    options: tuple[Accelerator, ...]
    ordered: bool = False


def count_fits(wanted: float, offered: float) -> bool:
    """Whether a node with ``offered`` of an accelerator gives a request for ``wanted`` of it.

    A whole count must match exactly (A100:8 is an 8-GPU machine). A
    fraction (T4:0.5: half a GPU, shared with other jobs on the cluster)
    fits any node holding at least that share, up to the next whole count:
    Azure's half-A10 machines and 1-GPU machines alike.
    """
    if float(wanted).is_integer():
        return abs(offered - wanted) < 1e-6
    return wanted - 1e-6 <= offered <= math.ceil(wanted) + 1e-6


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def bounded_number(value: int | float, what: str, maximum: float, hint: str) -> float:
    """Return ``value`` as a float if it is finite and at most ``maximum``; else raise.

    Integers too large for a float (YAML reads any number of digits) and
    ``.nan``/``.inf`` fail here with one message instead of deep inside a plan.
    """
    if isinstance(value, int) and abs(value) > maximum:
        number = math.inf  # float() of a huge int overflows; it is out of bounds either way
    else:
        number = float(value)
    if math.isnan(number):
        raise ValueError(f"{what} is not a number (nan) | hint: {hint}")
    if abs(number) > maximum:
        raise ValueError(f"{what} must be at most {maximum:,g}, got {_short(value)} | hint: {hint}")
    return number


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} characters)"


def parse_quantity(value: object, what: str) -> Quantity | None:
    """Parse ``4``, ``4.5``, ``"4"`` or ``"4+"`` into a Quantity (None stays None)."""
    if value is None:
        return None
    hint = f"write '{what}: 8' for exactly 8 or '{what}: 8+' for at least 8"
    if _is_number(value):
        number, plus = bounded_number(value, what, MAX_QUANTITY, hint), ""
    else:
        match = _NUMBER.match(str(value)) if isinstance(value, str) else None
        if not match:
            raise ValueError(f"expected a number like 4 or 4+ for {what}, got {value!r} | hint: {hint}")
        number, plus = bounded_number(float(match.group(1)), what, MAX_QUANTITY, hint), match.group(2)
    if number <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}"
                         f" | hint: leave {what} out to take the cloud's default")
    return Quantity(number, plus == "+")


def parse_accelerator(text: str) -> Accelerator:
    """Parse ``NAME`` or ``NAME:COUNT`` (count defaults to 1)."""
    name, sep, count_text = text.strip().partition(":")
    name = name.strip()
    if not _ACCELERATOR_NAME.match(name):
        raise ValueError(f"bad accelerator {text!r}"
                         " | hint: write NAME or NAME:COUNT, for example A100:8")
    if not sep:
        return Accelerator(name, 1.0)
    return Accelerator(name, _accelerator_count(count_text.strip(), text))


def _accelerator_count(count: object, text: object) -> float:
    if isinstance(count, str):
        match = _COUNT.match(count)
        if not match:
            raise ValueError(f"bad accelerator count in {text!r}"
                             " | hint: the count is a positive number, as in A100:8")
        count = float(match.group(1))
    if not _is_number(count):
        raise ValueError(f"bad accelerator count {count!r} for {text!r}"
                         " | hint: the count is a positive number, as in {A100: 8}")
    number = bounded_number(count, f"the accelerator count in {text!r}", MAX_ACCELERATORS,
                            "the count is a positive number, as in A100:8")
    if number <= 0:
        raise ValueError(f"accelerator count must be positive, got {number:g} in {text!r}"
                         " | hint: leave accelerators out for a CPU-only task")
    return number


def parse_accelerators(value: object) -> AcceleratorChoice | None:
    """Parse every SkyPilot accelerator form.

    ``"A100:8"`` and ``{A100: 8}`` give one option; a mapping with several keys
    (``{A100: 8, A100-80GB: 4}``, or the set form ``{A100:8, A100-80GB:4}``) is
    an unordered choice; a list (``[L4, A10G]``) is ordered by preference.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return AcceleratorChoice((parse_accelerator(value),))
    if isinstance(value, dict):
        if not value:
            raise ValueError("accelerators mapping is empty | hint: write for example {A100: 8}")
        return AcceleratorChoice(tuple(_from_mapping_item(k, v) for k, v in value.items()))
    if isinstance(value, list):
        if not value:
            raise ValueError("accelerators list is empty | hint: write for example [L4, A10G]")
        options: list[Accelerator] = []
        for item in value:
            if isinstance(item, str):
                options.append(parse_accelerator(item))
            elif isinstance(item, dict) and len(item) == 1:
                options.append(_from_mapping_item(*next(iter(item.items()))))
            else:
                raise ValueError(f"bad accelerator {item!r} in list"
                                 " | hint: each entry is NAME:COUNT, as in [L4:1, A10G:1]")
        return AcceleratorChoice(tuple(options), ordered=True)
    raise ValueError(f"expected a string, mapping or list of accelerators, got {value!r}"
                     " | hint: write for example A100:8")


def _from_mapping_item(key: object, count: object) -> Accelerator:
    if not isinstance(key, str):
        raise ValueError(f"bad accelerator name {key!r} | hint: write for example {{A100: 8}}")
    if count is None:  # YAML set syntax: {A100:8, H100:8} maps keys to null
        return parse_accelerator(key)
    accelerator = parse_accelerator(key)
    if accelerator.count != 1.0 or ":" in key:
        raise ValueError(f"accelerator {key!r} has a count in both key and value"
                         " | hint: write {A100: 8} or A100:8")
    return Accelerator(accelerator.name, _accelerator_count(count, f"{key}: {count}"))


def parse_data_sizes(value: object, what: str) -> dict[str, float]:
    """Parse SkyPilot's ``inputs``/``outputs``: at most one ``PATH_OR_URL: GB`` pair."""
    if value is None:
        return {}
    hint = f"write {what}: {{s3://bucket/data: 100}} (its size in GB)"
    if not isinstance(value, dict) or len(value) > 1:
        raise ValueError(f"{what} takes one mapping of a path or URL to its size in GB | hint: {hint}")
    out = {}
    for key, size in value.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"{what} key {key!r} must be a path or URL | hint: {hint}")
        if not _is_number(size):
            raise ValueError(f"{what}.{key} must be a size in GB, got {size!r} | hint: {hint}")
        number = bounded_number(size, f"{what}.{key}", MAX_QUANTITY, hint)
        if number < 0:
            raise ValueError(f"{what}.{key} must be 0 or more GB | hint: {hint}")
        out[key] = number
    return out


def parse_ports(value: object) -> tuple[tuple[int, int], ...]:
    """Parse ``8000``, ``"8000"``, ``"10000-10010"`` or a list of those into ranges."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    ranges = []
    for item in items:
        match = _PORT.fullmatch(item) if isinstance(item, str) else None
        if isinstance(item, int) and not isinstance(item, bool):
            low = high = item
        elif isinstance(item, float) and item.is_integer():  # is_integer() is False for nan/inf
            low = high = int(item)
        elif match and all(len(g or "") <= 5 for g in match.groups()):
            low = int(match.group(1))
            high = int(match.group(2) or low)
        elif match:
            raise ValueError(f"port {item!r} is outside 1-65535 | hint: ports are numbers from 1 to 65535")
        else:
            raise ValueError(f"bad port {item!r} | hint: write 8000, '10000-10010' or a list of them")
        if not (1 <= low <= 65535 and 1 <= high <= 65535):
            raise ValueError(f"port {_short(item)} is outside 1-65535"
                             " | hint: ports are numbers from 1 to 65535")
        if low > high:
            raise ValueError(f"port range {item!r} ends before it starts | hint: write LOW-HIGH")
        ranges.append((low, high))
    return tuple(ranges)


def parse_infra(value: str) -> tuple[str | None, str | None, str | None]:
    """Split ``cloud[/region[/zone]]`` (``*`` for any cloud) into its parts."""
    parts = [p.strip() for p in value.split("/")]
    if not 1 <= len(parts) <= 3 or any(not p for p in parts):
        raise ValueError(f"bad infra {value!r} | hint: write CLOUD, CLOUD/REGION or CLOUD/REGION/ZONE")
    cloud = None if parts[0] == "*" else parts[0].lower()
    region = parts[1] if len(parts) > 1 else None
    zone = parts[2] if len(parts) > 2 else None
    return cloud, region, zone


def check_safe_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is safe as a cluster, task or service name; else raise."""
    if not _SAFE_NAME.match(name) or len(name) > 63:
        raise ValueError(
            f"unsafe {what} {name!r} | hint: use 1-63 letters, digits, '-', '_' or '.', "
            "starting with a letter and ending with a letter or digit")
    return name


def check_env_name(name: object, what: str = "environment variable") -> str:
    """Return ``name`` if it is a valid environment variable name; else raise."""
    if not isinstance(name, str) or not _ENV_NAME.match(name):
        raise ValueError(f"bad {what} name {name!r}"
                         " | hint: use letters, digits and '_', not starting with a digit")
    return name


def parse_minutes(value: object, what: str) -> int:
    """Parse ``10``, ``"10m"``, ``"2h"`` or ``"1d"`` into whole minutes (at most MAX_MINUTES)."""
    hint = "write minutes (10) or a duration (30m, 2h, 1d)"
    if _is_number(value) and value >= 0 and (isinstance(value, int) or value.is_integer()):
        return int(check_minutes(value, what))
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match or len(match.group(1)) > 12:
        raise ValueError(f"bad {what} {_short(value)!r} | hint: {hint}")
    amount, unit = int(match.group(1)), match.group(2) or "m"
    minutes = {"s": max(1, amount // 60) if amount else 0, "m": amount, "h": amount * 60,
               "d": amount * 1440}[unit]
    return int(check_minutes(minutes, what))


def check_minutes(value: int | float, what: str) -> float:
    """Return an idle time in minutes if it is a number from 0 to MAX_MINUTES; else raise."""
    minutes = bounded_number(value, what, MAX_MINUTES,
                             "autostop takes up to ten years of idle minutes")
    if minutes < 0:
        raise ValueError(f"{what} must be 0 or more minutes, got {minutes:g}"
                         " | hint: use --cancel to turn autostop off")
    return minutes


def check_path(path: str, what: str, *, local: bool) -> str:
    """Return ``path`` if the OS can hold it; else raise.

    A path has no NUL byte, no component longer than NAME_MAX and is no
    longer than PATH_MAX. A ``local`` path (on this machine) starting with
    ``~user`` must name a user that exists here, so it can be expanded.
    """
    if "\0" in path:
        raise ValueError(f"{what} holds a NUL character | hint: remove the \\0 from the path")
    size = len(path.encode("utf-8", "surrogateescape"))
    if size > PATH_MAX:
        raise ValueError(f"{what} is {size} bytes long; a path has at most {PATH_MAX}"
                         " | hint: shorten the path")
    for part in path.split("/"):
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > NAME_MAX:
            raise ValueError(f"{what} has a name of {size} bytes ({_short(part)}); each part of a"
                             f" path has at most {NAME_MAX} | hint: shorten that file or directory name")
    user = path[1:].split("/", 1)[0] if path.startswith("~") else ""
    if local and user:
        import pwd

        try:
            pwd.getpwnam(user)
        except KeyError:
            raise ValueError(f"{what} {_short(path)!r} starts with ~{user}, but there is no user"
                             f" {user!r} on this machine | hint: write the full path, or ~/ for"
                             " your own home") from None
    return path
