"""The interface a cloud plugin implements, and the result of a credential check."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class CredentialCheck:
    """Whether a cloud is usable, and if not, why and how to fix it."""

    ok: bool
    reason: str
    hint: str | None = None


class Cloud(abc.ABC):
    """A cloud skyk can place work on.

    Subclasses set ``name`` (lower case, as users write it in ``cloud:`` and
    ``infra:``) and implement :meth:`check_credentials`. Provisioning verbs
    join this interface as the kernel grows them.
    """

    name: ClassVar[str]

    #: vCPUs a task gets on this cloud when it names no cpus, memory,
    #: accelerators or instance type (SkyPilot's default is 8 with 4 GiB each).
    #: ``None`` places no floor, as on the local machine.
    default_cpus: ClassVar[float | None] = 8
    default_memory_gib: ClassVar[float | None] = 32

    @abc.abstractmethod
    def check_credentials(self) -> CredentialCheck:
        """Return whether credentials for this cloud are present and well formed.

        Must not use the network: it reads environment variables and local
        files only, so ``skyk check`` is fast and works offline.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
