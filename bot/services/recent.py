"""The open conversations this process saved last, as it saved them.

Why: the next answer to a conversation usually comes to the process that asked the question,
and reading back the row it just wrote (and parsing its state) was a tenth of an answer's
work. Why it is safe: every write to a conversation is a compare-and-set on its version
(``statements.save_state``), so a row that another request or process changed since —
another answer, a stop, an opt-out, ``parley forget`` — fails that check, and the answer is
decided again from the database. Only committed versions are kept (a version that rolled
back could be written again by another process, with other content, and would then pass the
check), and versions only go up, so a version that matches is the content kept. An entry is
taken out when it is used. Anything but the plain path (a repeat, a late or invalid answer,
an expired survey) is decided from the database too.

Nothing is used after ``KEEP_FOR``, and the scheduler lets it go within five minutes more
(``let_go``): a person forgotten by ``parley forget`` in another process can no longer be
written back (their row is gone), and is not held in memory for long either.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.engine import ConversationState
    from bot.flow import Flow
    from bot.store.statements import ConversationRow, RespondentRow

LIMIT = 10_000  # about 20 MB at most; beyond it the least recently saved are read again
KEEP_FOR = 10 * 60.0  # seconds after the save; the next answer usually comes within a minute


@dataclass(frozen=True)
class Saved:
    conversation: ConversationRow  # its version: the one the (committed) save wrote
    respondent: RespondentRow  # only its id, key and opt-out are used, as of the save
    flow: Flow
    state: ConversationState  # never changed in place (the engine works on copies)


class RecentConversations:
    """A bounded map from conversation id to what was saved last, oldest first. Each
    operation is a few dict operations, safe from the loop and the SQLite writer thread."""

    def __init__(
        self,
        limit: int = LIMIT,
        keep_for: float = KEEP_FOR,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._saved: OrderedDict[str, tuple[float, Saved]] = OrderedDict()
        self._limit = limit
        self._keep_for = keep_for
        self._clock = clock

    def take(self, conversation_id: str) -> Saved | None:
        entry = self._saved.pop(conversation_id, None)
        if entry is None or self._clock() - entry[0] > self._keep_for:
            return None
        return entry[1]

    def keep(self, saved: Saved) -> None:
        key = saved.conversation.id
        self._saved.pop(key, None)  # to the end: the order is the order of saving
        self._saved[key] = (self._clock(), saved)
        self.let_go(over=self._limit)

    def drop(self, conversation_id: str) -> None:
        self._saved.pop(conversation_id, None)

    def let_go(self, *, over: int | None = None) -> None:
        """Forget what was kept longer than ``keep_for`` (and the oldest beyond ``over``
        entries). The scheduler calls this too, for a process that has gone quiet."""
        too_old = self._clock() - self._keep_for
        while self._saved:
            try:
                key, (at, _saved) = next(iter(self._saved.items()))
            except (StopIteration, RuntimeError):  # changed by another thread meanwhile
                return
            if at >= too_old and (over is None or len(self._saved) <= over):
                return
            self._saved.pop(key, None)

    def __len__(self) -> int:
        return len(self._saved)
