"""Engine outputs → Block Kit, pure functions (no Slack, no I/O) so every step type's blocks
are unit-tested.

Block Kit rejects a whole message when one limit is exceeded, so every string that comes
from a flow or a respondent goes through :func:`cut` with the limit of the field it lands in,
and every mrkdwn string is escaped (a survey question cannot ping ``<!channel>``).

Ids carry what a click needs to find its conversation: ``block_id`` is
``parley:<conversation>:<step>:<part>``, ``action_id`` is ``parley:<verb>:<step>`` (plus
``:<n>``, its place, in a row of buttons: ids must differ within a block) and a button's
``value`` is JSON ``{"c": conversation, "v": value}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bot.engine.messages import Ask, End, InputSpec, Output, Say

# Block Kit limits (api.slack.com/reference/block-kit)
MAX_BLOCKS_MESSAGE = 50
MAX_BLOCKS_VIEW = 100
MAX_SECTION_TEXT = 3000
MAX_CONTEXT_TEXT = 2000
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_ACTIONS = 25
MAX_CHECKBOXES = 10
MAX_SELECT_OPTIONS = 100
MAX_MODAL_TITLE = 24
MAX_ID = 255
MAX_LABEL = 2000
MAX_FALLBACK = 3000
MAX_MESSAGE_TEXT = 10_000  # all blocks of a message together (Slack: msg_blocks_too_long)
MAX_PLAIN_INPUT = 3000
MAX_PRIVATE_METADATA = 3000
BUTTONS_FOR_CHOICES = 5
BUTTONS_FOR_SCALE = 11

PREFIX = "parley"
ANSWER = "answer"
PICK = "pick"
SUBMIT = "submit"
FORM = "form"
OPT_OUT = f"{PREFIX}:optout"
RESUME = f"{PREFIX}:resume"
START = f"{PREFIX}:start"
HOME_OPT_OUT = f"{PREFIX}:home_optout"
MODAL = f"{PREFIX}:modal"
DASHBOARD = f"{PREFIX}:dashboard"  # a link button: its click is only acknowledged


@dataclass(frozen=True)
class Message:
    """One Slack message to post: fallback ``text``, ``blocks``; ``step`` when it asks."""

    text: str
    blocks: list[dict[str, Any]]
    step: str | None = None
    question: str = ""


# --- small helpers ------------------------------------------------------------------------------


def cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, ending with an ellipsis when something was cut."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)].rstrip() + "…"


def escape(text: str) -> str:
    """Slack mrkdwn control characters (so user/flow text cannot form links or mentions)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(text: str, limit: int = MAX_SECTION_TEXT) -> dict[str, Any]:
    # Escape first, then cut, so an entity is never split and the limit holds on what is sent.
    return escaped_mrkdwn(escape(text), limit)


def escaped_mrkdwn(escaped: str, limit: int = MAX_SECTION_TEXT) -> dict[str, Any]:
    """A mrkdwn object from text that is already escaped (escaping again would show
    ``&amp;amp;``), cut to ``limit`` without splitting an entity."""
    if len(escaped) > limit:
        escaped = cut(escaped, limit)
        amp = escaped.rfind("&", max(0, len(escaped) - 6))
        if amp != -1 and ";" not in escaped[amp:]:
            escaped = escaped[:amp] + "…"
    return {"type": "mrkdwn", "text": escaped or " "}


def preformatted(text: str, limit: int = MAX_SECTION_TEXT) -> dict[str, Any]:
    """Text shown as it is, in a monospaced box. Not mrkdwn between ``` fences: text of its
    own (a respondent's answer) holding ``` would close those early and what follows would
    render as formatting and links — in a message to researchers."""
    literal = {"type": "text", "text": cut(text, limit) or " "}
    return {
        "type": "rich_text",
        "elements": [{"type": "rich_text_preformatted", "elements": [literal]}],
    }


def plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": cut(text, limit) or " ", "emoji": True}


def fallback(text: str) -> str:
    """A message's ``text`` (notifications, screen readers): Slack reads it as mrkdwn too."""
    return str(mrkdwn(text, MAX_FALLBACK)["text"])


def text_message(text: str) -> Message:
    """A message of plain words."""
    return Message(fallback(text), [section(text)])


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": mrkdwn(text)}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [mrkdwn(text, MAX_CONTEXT_TEXT)]}


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one per process


def encode(conversation_id: str, value: Any = None, *, limit: int = MAX_BUTTON_VALUE) -> str:
    data: dict[str, Any] = {"c": conversation_id}
    if value is not None:
        data["v"] = value
    raw = _COMPACT.encode(data)
    if len(raw) > limit:
        raise ValueError(f"value too long for Slack ({len(raw)} > {limit})")
    return raw


def decode(raw: str | None) -> tuple[str, Any]:
    """(conversation id, value) from a button/option value; bounded and type-checked."""
    if not raw or len(raw) > MAX_BUTTON_VALUE:
        raise ValueError("missing or oversized value")
    data = json.loads(raw)
    if not isinstance(data, dict) or not isinstance(data.get("c"), str) or len(data["c"]) > 32:
        raise ValueError("malformed value")
    return data["c"], data.get("v")


def action_id(verb: str, step: str) -> str:
    return cut(f"{PREFIX}:{verb}:{step}", MAX_ID)


def block_id(conversation_id: str, step: str, part: str = "q") -> str:
    return cut(f"{PREFIX}:{conversation_id}:{step}:{part}", MAX_ID)


def button(text: str, action: str, value: str, *, style: str | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "button",
        "text": plain(text, MAX_BUTTON_TEXT),
        "action_id": action,
        "value": value,
    }
    if style:
        element["style"] = style
    return element


def option(text: str, value: str) -> dict[str, Any]:
    return {"text": plain(text, MAX_OPTION_TEXT), "value": cut(value, MAX_OPTION_VALUE)}


# --- questions ----------------------------------------------------------------------------------


def ask_blocks(ask: Ask, conversation_id: str) -> list[dict[str, Any]]:
    """The blocks of one question, for every input kind the engine produces."""
    spec = ask.input
    blocks: list[dict[str, Any]] = [section(ask.text)]
    if ask.help:
        blocks.append(context(ask.help))
    kind = spec.kind
    if spec.min is not None and spec.max is not None:
        blocks.extend(_scale(ask, spec, conversation_id))
    elif kind == "choice":
        blocks.extend(_choice(ask, spec, conversation_id))
    elif kind == "multi_choice":
        blocks.extend(_multi(ask, spec, conversation_id))
    elif kind == "yes_no":
        blocks.append(
            _actions(
                conversation_id,
                ask.step,
                [
                    button(
                        "Yes",
                        action_id(ANSWER, ask.step),
                        encode(conversation_id, True),
                        style="primary",
                    ),
                    button("No", action_id(ANSWER, ask.step), encode(conversation_id, False)),
                ],
                skip=not spec.required,
            )
        )
    elif kind == "email":
        if spec.consent:
            blocks.append(context(spec.consent))
        blocks.append(
            _actions(
                conversation_id,
                ask.step,
                [
                    button(
                        "Share my email",
                        action_id(FORM, ask.step),
                        encode(conversation_id),
                        style="primary",
                    ),
                    button("No thanks", action_id(ANSWER, ask.step), encode(conversation_id)),
                ],
            )
        )
    else:  # text (and any future free-text kind): reply in the DM, or use the form
        blocks.append(context("Just reply here with your answer, or use the form."))
        blocks.append(
            _actions(
                conversation_id,
                ask.step,
                [button("Answer in a form", action_id(FORM, ask.step), encode(conversation_id))],
                skip=not spec.required,
            )
        )
    return blocks[:MAX_BLOCKS_MESSAGE]


def _actions(
    conversation_id: str,
    step: str,
    elements: list[dict[str, Any]],
    *,
    skip: bool = False,
    part: str = "a",
) -> dict[str, Any]:
    if skip:
        elements = [*elements, button("Skip", action_id(ANSWER, step), encode(conversation_id))]
    # Slack refuses a message (invalid_blocks) whose block has two elements with one
    # action_id, so each gets its place appended: parley:<verb>:<step>:<n>
    numbered = [
        {**element, "action_id": f"{element['action_id']}:{n}"}
        for n, element in enumerate(elements[:MAX_ACTIONS])
    ]
    return {
        "type": "actions",
        "block_id": block_id(conversation_id, step, part),
        "elements": numbered,
    }


def _scale(ask: Ask, spec: InputSpec, conversation_id: str) -> list[dict[str, Any]]:
    assert spec.min is not None and spec.max is not None
    low, high = spec.labels or (None, None)
    points = list(range(spec.min, spec.max + 1))
    answer = action_id(ANSWER, ask.step)
    blocks: list[dict[str, Any]] = []
    if len(points) <= BUTTONS_FOR_SCALE:
        labelled = len(points) <= 7  # CSAT/CES: the end buttons carry their labels
        buttons = []
        for n in points:
            text = str(n)
            if labelled and n == spec.min and low:
                text = f"{n} · {low}"
            elif labelled and n == spec.max and high:
                text = f"{n} · {high}"
            buttons.append(button(text, answer, encode(conversation_id, n)))
        blocks.append(_actions(conversation_id, ask.step, buttons, skip=not spec.required))
    else:
        select = _select(
            answer,
            "Pick a number",
            [option(str(n), encode(conversation_id, n, limit=MAX_OPTION_VALUE)) for n in points],
        )
        blocks.append(_actions(conversation_id, ask.step, [select], skip=not spec.required))
    if low or high:
        blocks.append(context(f"{spec.min} = {low or '—'}   ·   {spec.max} = {high or '—'}"))
    return blocks


def _select(
    action: str, placeholder: str, options: list[dict[str, Any]], *, multi: bool = False
) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "multi_static_select" if multi else "static_select",
        "action_id": action,
        "placeholder": plain(placeholder, 150),
    }
    if len(options) <= MAX_SELECT_OPTIONS:
        element["options"] = options
    else:  # option_groups hold 100 groups of 100
        element["option_groups"] = [
            {
                "label": plain(f"{i + 1}–{min(i + MAX_SELECT_OPTIONS, len(options))}", 75),
                "options": options[i : i + MAX_SELECT_OPTIONS],
            }
            for i in range(
                0, min(len(options), MAX_SELECT_OPTIONS * MAX_SELECT_OPTIONS), MAX_SELECT_OPTIONS
            )
        ]
    return element


def _choice(ask: Ask, spec: InputSpec, conversation_id: str) -> list[dict[str, Any]]:
    choices = spec.choices or ()
    answer = action_id(ANSWER, ask.step)
    if len(choices) <= BUTTONS_FOR_CHOICES:
        elements = [button(c.label, answer, encode(conversation_id, c.value)) for c in choices]
    else:
        elements = [
            _select(
                answer,
                "Choose…",
                [
                    option(c.label, encode(conversation_id, c.value, limit=MAX_OPTION_VALUE))
                    for c in choices
                ],
            )
        ]
    return [_actions(conversation_id, ask.step, elements, skip=not spec.required)]


def pick_hint(low: int, high: int, count: int) -> str:
    """How many to tick, in words that agree with "pick all that apply" (as the widget's)."""
    if low == high:
        return f"Pick {low}"
    if high >= count:
        return {0: "Pick any that apply", 1: "Pick one or more"}.get(low, f"Pick at least {low}")
    return f"Pick up to {high}" if low == 0 else f"Pick {low} to {high}"


def _multi(ask: Ask, spec: InputSpec, conversation_id: str) -> list[dict[str, Any]]:
    choices = spec.choices or ()
    options = [option(c.label, c.value) for c in choices]
    pick = action_id(PICK, ask.step)
    if len(choices) <= MAX_CHECKBOXES:
        picker: dict[str, Any] = {"type": "checkboxes", "action_id": pick, "options": options}
    else:
        picker = _select(pick, "Choose…", options, multi=True)
        if spec.max_picks:
            picker["max_selected_items"] = spec.max_picks
    hint = pick_hint(spec.min_picks or 0, spec.max_picks or len(choices), len(choices))
    submit = button("Submit", action_id(SUBMIT, ask.step), encode(conversation_id), style="primary")
    return [
        {
            "type": "actions",
            "block_id": block_id(conversation_id, ask.step, "p"),
            "elements": [picker],
        },
        context(hint + ", then press Submit."),
        _actions(conversation_id, ask.step, [submit]),
    ]


# --- whole replies ------------------------------------------------------------------------------


def render_reply(
    outputs: list[Output], conversation_id: str, *, offer_opt_out: bool = False
) -> list[Message]:
    """Messages for one service reply: Says grouped, each question its own message (so it can be
    updated on its own), the end text last. ``offer_opt_out`` adds the opt-out button to the
    first message (a survey's intro)."""
    messages: list[Message] = []
    said: list[str] = []

    def flush() -> None:
        if said:
            for part in _message_parts(_chunks("\n\n".join(said))):
                blocks = [section(chunk) for chunk in part][: MAX_BLOCKS_MESSAGE - 1]
                messages.append(Message(fallback("\n\n".join(part)), blocks))
            said.clear()

    for output in outputs:
        if isinstance(output, Say):
            if output.text:
                said.append(output.text)
        elif isinstance(output, Ask):
            flush()
            messages.append(
                Message(
                    fallback(output.text),
                    ask_blocks(output, conversation_id),
                    step=output.step,
                    question=output.text,
                )
            )
        elif isinstance(output, End):
            text = output.text or END_TEXT.get(output.reason, "")
            if text:
                said.append(text)
    flush()
    if offer_opt_out and messages:
        first = messages[0]
        blocks = [*first.blocks[: MAX_BLOCKS_MESSAGE - 1], opt_out_block(conversation_id)]
        messages[0] = Message(first.text, blocks, first.step, first.question)
    return messages


END_TEXT = {
    "completed": "That's everything — thank you!",
    "expired": "This survey has expired.",
    "stopped": "",
    "opted_out": "",
}


def _message_parts(chunks: list[str]) -> list[list[str]]:
    """Chunks grouped into messages of at most ``MAX_MESSAGE_TEXT`` characters as sent:
    Slack refuses a message whose blocks hold much more (``msg_blocks_too_long``), though no
    single block is over its limit."""
    parts: list[list[str]] = [[]]
    size = 0
    for chunk in chunks:
        sent = len(escape(chunk))
        if parts[-1] and size + sent > MAX_MESSAGE_TEXT:
            parts.append([])
            size = 0
        parts[-1].append(chunk)
        size += sent
    return parts


def _chunks(text: str) -> list[str]:
    """Split long text into section-sized pieces on paragraph or line breaks where possible,
    measured as sent (escaped: ``&`` takes five characters), so no piece is cut short."""
    chunks: list[str] = []
    while len(escape(text)) > MAX_SECTION_TEXT:
        fits = _fitting(text, MAX_SECTION_TEXT)
        at = text.rfind("\n", 0, fits)
        at = at if at > fits // 2 else fits
        chunks.append(text[:at])
        text = text[at:].lstrip("\n")
    chunks.append(text)
    return chunks


def _fitting(text: str, limit: int) -> int:
    """How many characters of ``text`` fit in ``limit`` once escaped."""
    size = 0
    for index, char in enumerate(text):
        size += 5 if char == "&" else 4 if char in "<>" else 1
        if size > limit:
            return index
    return len(text)


def opt_out_block(conversation_id: str) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": cut(f"{PREFIX}:{conversation_id}:optout:o", MAX_ID),
        "elements": [
            button(
                "Don't survey me again",
                OPT_OUT,
                encode(conversation_id),
            )
            | {
                "confirm": {
                    "title": plain("Stop all surveys?", 100),
                    "text": plain("You won't get any more surveys from us.", 300),
                    "confirm": plain("Stop surveys", 30),
                    "deny": plain("Cancel", 30),
                }
            }
        ],
    }


def answered_blocks(question_mrkdwn: str, shown: str) -> list[dict[str, Any]]:
    """The question message after it was answered: the answer shown, the buttons gone.

    ``question_mrkdwn`` is the question as already sent (escaped mrkdwn, e.g. taken from the
    clicked message), so it is not escaped again; ``shown`` is plain text and is.
    """
    return closed_blocks(question_mrkdwn, f"✓ Your answer: {shown}")


def closed_blocks(question_mrkdwn: str, note: str) -> list[dict[str, Any]]:
    """A question message that takes no more answers: the question, ``note`` (plain text)
    where its buttons were."""
    return [{"type": "section", "text": escaped_mrkdwn(question_mrkdwn)}, context(note)]


def display_answer(value: Any, labels: dict[str, str] | None = None) -> str:
    """How an accepted answer reads back to the respondent."""
    labels = labels or {}
    if value is None:
        return "skipped"
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, list):
        return ", ".join(labels.get(str(v), str(v)) for v in value) or "none"
    if isinstance(value, dict):
        return str(value.get("email", ""))
    text = labels.get(str(value), str(value))
    return cut(f"“{text}”" if isinstance(value, str) and str(value) not in labels else text, 500)


# --- modals -------------------------------------------------------------------------------------

TEXT_BLOCK = "parley:text"
TEXT_ACTION = "parley:text_input"
EMAIL_BLOCK = "parley:email"
EMAIL_ACTION = "parley:email_input"
CONSENT_BLOCK = "parley:consent"
CONSENT_ACTION = "parley:consent_input"


def form_modal(
    ask: Ask, conversation_id: str, *, channel: str, ts: str, title: str = "Survey"
) -> dict[str, Any]:
    """A modal answering a text or email question (``private_metadata`` says which)."""
    metadata = json.dumps(
        {"c": conversation_id, "s": ask.step, "ch": channel, "ts": ts}, separators=(",", ":")
    )
    spec = ask.input
    blocks: list[dict[str, Any]]
    if spec.kind == "email":
        # A checkbox says at most 75 characters: a longer consent line is shown in full above
        # it (never cut: people must read what they agree to) and the box says "I agree".
        consent = spec.consent or "I agree"
        fits = len(escape(consent)) <= MAX_OPTION_TEXT
        blocks = [
            {
                "type": "input",
                "block_id": EMAIL_BLOCK,
                "label": plain(ask.text, MAX_LABEL),
                "element": {"type": "email_text_input", "action_id": EMAIL_ACTION},
            },
            *([] if fits else [section(consent)]),
            {
                "type": "input",
                "block_id": CONSENT_BLOCK,
                "label": plain("Consent", MAX_LABEL),
                "element": {
                    "type": "checkboxes",
                    "action_id": CONSENT_ACTION,
                    "options": [
                        {
                            "text": mrkdwn(consent if fits else "I agree", MAX_OPTION_TEXT),
                            "value": "yes",
                        }
                    ],
                },
            },
        ]
    else:
        element: dict[str, Any] = {
            "type": "plain_text_input",
            "action_id": TEXT_ACTION,
            "multiline": True,
            "max_length": min(spec.max_length or MAX_PLAIN_INPUT, MAX_PLAIN_INPUT),
        }
        if spec.placeholder:
            element["placeholder"] = plain(spec.placeholder, 150)
        blocks = [
            {
                "type": "input",
                "block_id": TEXT_BLOCK,
                "label": plain(ask.text, MAX_LABEL),
                "element": element,
                "optional": not spec.required,
            }
        ]
    return {
        "type": "modal",
        "callback_id": MODAL,
        "private_metadata": cut(metadata, MAX_PRIVATE_METADATA),
        "title": plain(title, MAX_MODAL_TITLE),
        "submit": plain("Send", MAX_MODAL_TITLE),
        "close": plain("Cancel", MAX_MODAL_TITLE),
        "blocks": blocks[:MAX_BLOCKS_VIEW],
    }


def modal_answer(view: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(private metadata, value) from a submitted form modal."""
    raw = view.get("private_metadata") or ""
    if len(raw) > MAX_PRIVATE_METADATA:
        raise ValueError("oversized metadata")
    meta = json.loads(raw)
    values = (view.get("state") or {}).get("values") or {}
    if EMAIL_BLOCK in values:
        email = (values[EMAIL_BLOCK].get(EMAIL_ACTION) or {}).get("value") or ""
        picked = (values.get(CONSENT_BLOCK, {}).get(CONSENT_ACTION) or {}).get(
            "selected_options"
        ) or []
        return meta, {"email": email[:254], "consent": bool(picked)}
    text = (values.get(TEXT_BLOCK, {}).get(TEXT_ACTION) or {}).get("value")
    return meta, (text[: MAX_PLAIN_INPUT * 4] if isinstance(text, str) else None)
