"""The open conversations this process saved last, as it saved them.

Why: the next answer to a conversation usually comes to the process that asked the question,
and reading back the row it just wrote (and parsing its state) was a tenth of an answer's
work. Why it is safe: every write to a conversation is a compare-and-set on its version
(``statements.save_state``), so a row that another request or process changed since —
another answer, a stop, an opt-out, ``parley forget`` — fails that check, and the answer is
decided again from the database. An entry is taken out when it is used and put back only
with what the next save wrote, so a transaction that rolls back leaves at worst an entry
whose version no longer matches. Anything but the plain path (a repeat, a late or invalid
answer, an expired survey) is decided from the database too.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.engine import ConversationState
    from bot.flow import Flow
    from bot.store.statements import ConversationRow, RespondentRow

LIMIT = 10_000  # about 20 MB at most; beyond it the least recently saved are read again


@dataclass(frozen=True)
class Saved:
    conversation: ConversationRow  # its version: the one the save wrote
    respondent: RespondentRow  # only its id, key and opt-out are used, as of the save
    flow: Flow
    state: ConversationState  # never changed in place (the engine works on copies)


class RecentConversations:
    """A bounded map from conversation id to what was saved last. Each operation is one
    dict operation, safe from the loop and the SQLite writer thread alike."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._saved: OrderedDict[str, Saved] = OrderedDict()
        self._limit = limit

    def take(self, conversation_id: str) -> Saved | None:
        return self._saved.pop(conversation_id, None)

    def keep(self, saved: Saved) -> None:
        self._saved[saved.conversation.id] = saved
        if len(self._saved) > self._limit:
            with contextlib.suppress(KeyError):  # emptied by another thread meanwhile
                self._saved.popitem(last=False)

    def drop(self, conversation_id: str) -> None:
        self._saved.pop(conversation_id, None)

    def __len__(self) -> int:
        return len(self._saved)
