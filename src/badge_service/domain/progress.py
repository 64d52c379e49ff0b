"""CrowdTwist progress: a recipient's state on a badge moves forward through the badge's states
by order, never back.

Rules:
- The state recorded must be one of the badge's states.
- Recording a state of a lower order than the current one is FAILED_PRECONDITION
  (PROGRESS_BACKWARDS); recording the current state again changes nothing.
- A recipient with nothing recorded is in the badge's first state (lowest order).
- Progress does not award: reaching the earned state by RecordProgress creates no award.
  Awards are made by CreateAward; an award of a badge moves its recipient to the earned
  state (store.progress.mark_earned), never back.

Badge validation makes orders follow unearned < in progress < earned, so comparing state
kinds compares orders; the store relies on that to compare atomically.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from badge_service.domain import limits
from badge_service.domain.awards import Recipient
from badge_service.domain.badges import Badge, BadgeState, BadgeStateType
from badge_service.domain.errors import FailedPrecondition, InvalidArgument

# ListRecipientBadgeStates: 50 a page by default, at most limits.RECIPIENT_STATES_PAGE.
LIST_DEFAULT_PAGE_SIZE = 50
LIST_MAX_PAGE_SIZE = limits.RECIPIENT_STATES_PAGE


@dataclass(frozen=True, slots=True)
class RecipientBadgeState:
    """A recipient's state on one badge; update_time is None when nothing is recorded."""

    badge_id: int
    recipient: Recipient
    state: BadgeStateType
    order: int
    update_time: dt.datetime | None = None


def first_state(badge: Badge) -> BadgeState:
    """The badge's state of the lowest order."""
    return min(badge.badge_states, key=lambda s: s.order)


def earned_state(badge: Badge) -> BadgeState:
    """The badge's earned state (every stored badge has one)."""
    for s in badge.badge_states:
        if s.state is BadgeStateType.EARNED:
            return s
    # Validation refuses badges without it; the last state is the closest meaning otherwise.
    return max(badge.badge_states, key=lambda s: s.order)


def badge_state(badge: Badge, state: BadgeStateType | None, where: str = "state") -> BadgeState:
    """The badge's state of this kind; INVALID_ARGUMENT when the badge has no such state."""
    if state is None:
        raise InvalidArgument(where, "is required: unearned, in progress or earned")
    for s in badge.badge_states:
        if s.state is state:
            return s
    have = ", ".join(s.state.label for s in badge.badge_states if s.state is not None)
    raise InvalidArgument(
        where, f"{state.label!r} is not a state of badge {badge.id} (it has: {have})"
    )


def order_of(badge: Badge, state: BadgeStateType, recorded_order: int) -> int:
    """The state's order in the badge now (the order recorded if the badge no longer has it)."""
    for s in badge.badge_states:
        if s.state is state:
            return s.order
    return recorded_order


def default_state(badge: Badge, recipient: Recipient) -> RecipientBadgeState:
    """Where a recipient with nothing recorded stands: the first state, no update time."""
    first = first_state(badge)
    assert first.state is not None
    return RecipientBadgeState(badge.id, recipient, first.state, first.order, None)


def progress_backwards(
    badge_id: int, current: BadgeStateType, requested: BadgeStateType
) -> FailedPrecondition:
    """The recipient is already past the state asked for."""
    return FailedPrecondition(
        f"the recipient is already {current.label!r} on badge {badge_id}; "
        f"progress cannot move back to {requested.label!r}",
        reason="PROGRESS_BACKWARDS",
        metadata={
            "badge_id": str(badge_id),
            "current_state": current.name,
            "requested_state": requested.name,
        },
    )
