"""Which Event to write for something the operator tells (pure), as client-go's
EventCorrelator does for kubelets and controllers.

- **Repeated**: the same reason, type and message again within ``WINDOW`` bumps the
  Event already written (its ``count`` and ``lastTimestamp``) instead of creating one.
- **Similar**: the same reason and type with another message. The first
  ``SIMILAR_MAX - 1`` distinct messages seen within ``WINDOW`` get an Event each;
  from the ``SIMILAR_MAX``-th on they share one Event, its message
  ``COMBINED`` + the latest, bumped on each.

So a pipeline whose budget changes every tick keeps at most ``SIMILAR_MAX`` Events
of that reason alive, each write after the first few a PATCH of one object, and
``kubectl describe`` shows how often (``count``) and the latest word.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WINDOW = 600.0
"""Seconds an Event is bumped for its repeats; after that a repeat is a new Event."""
SIMILAR_MAX = 10
"""Distinct messages of one reason and type within ``WINDOW`` that make them combined."""
COMBINED = "(combined from similar events): "
"""What a combined Event's message starts with (client-go's own words)."""

Key = tuple[str, str, str]
"""An Event's identity here: reason, type, and its message (or ``COMBINED``)."""


@dataclass(frozen=True)
class Write:
    """One Event write: create one (``name`` None) or bump the Event ``name``."""

    key: Key
    reason: str
    type: str
    message: str
    count: int
    name: str | None


@dataclass
class _Written:
    name: str
    count: int
    last: float


@dataclass
class EventCorrelator:
    """What has been written for one object, and what to write next."""

    window: float = WINDOW
    similar_max: int = SIMILAR_MAX
    _written: dict[Key, _Written] = field(default_factory=dict)
    _messages: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    """Per reason and type: each distinct message seen within the window, and when."""

    def write(self, reason: str, type_: str, message: str, now: float) -> Write:
        """The write that tells ``message`` at ``now``; ``written`` once it is made."""
        self._expire(now)
        seen = self._messages.setdefault((reason, type_), {})
        seen[message] = now
        if len(seen) >= self.similar_max:
            key: Key = (reason, type_, COMBINED)
            message = COMBINED + message
        else:
            key = (reason, type_, message)
        before = self._written.get(key)
        if before is None:
            return Write(key, reason, type_, message, 1, None)
        return Write(key, reason, type_, message, before.count + 1, before.name)

    def written(self, write: Write, name: str, now: float) -> None:
        """``write`` was made; ``name``: the Event it created or bumped."""
        self._written[write.key] = _Written(name, write.count, now)

    def lost(self, write: Write) -> None:
        """The Event ``write`` meant to bump is gone (expired): the next one is created."""
        self._written.pop(write.key, None)

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        for key in [k for k, w in self._written.items() if w.last < horizon]:
            del self._written[key]
        for group, seen in list(self._messages.items()):
            for message in [m for m, t in seen.items() if t < horizon]:
                del seen[message]
            if not seen:
                del self._messages[group]
