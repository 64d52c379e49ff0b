"""A page of a List use case, as every transport renders one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One keyset page: its items, the token that resumes after them ("" on the last page)
    and the number of items the whole list holds."""

    items: list[T]
    next_page_token: str
    total_size: int
