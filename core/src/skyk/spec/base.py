"""Base model for spec sections: strict types and unknown keys with suggestions."""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """Return the closest of ``choices`` to ``word``, or None if none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


class SpecModel(BaseModel):
    """A section of the task YAML: frozen, strictly typed, no unknown keys."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data: Any) -> Any:
        # Done here rather than with extra="forbid" alone so the error can
        # carry a did-you-mean against this section's own field names.
        if isinstance(data, dict):
            known = list(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    close = suggest(str(key), known)
                    hint = f"did you mean '{close}'?" if close else f"expected one of: {', '.join(known)}"
                    raise PydanticCustomError(
                        "unknown_field", "unknown field '{field}'; {hint}",
                        {"field": str(key), "hint": hint},
                    )
        return data
