/*
 * Parley chat widget — one <script> tag, no build step, no dependencies.
 *
 *   <script src="https://parley.example.com/widget.js" data-flow="welcome" async></script>
 *
 * Optional attributes: data-user + data-signature (hex HMAC-SHA256 of the user id under
 * PARLEY_WEB_SECRET, computed by the host's server), data-open="true" (open at once),
 * data-title, data-color (CSS colour of buttons and the launcher).
 *
 * The respondent token and the conversation id live in the HOST page's localStorage:
 * third-party cookies are blocked in the usual embed, and this way a reload (or a restart
 * of the server) picks the conversation up where it stopped. The UI lives in a shadow root
 * so the host's CSS cannot break it and ours cannot leak out.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  if (!script) {
    return;
  }
  var flow = script.getAttribute("data-flow") || "welcome";
  var user = script.getAttribute("data-user") || "";
  var signature = script.getAttribute("data-signature") || "";
  var title = script.getAttribute("data-title") || "Quick question";
  var color = script.getAttribute("data-color") || "#4f46e5";
  var autoOpen = script.getAttribute("data-open") === "true";
  var base = new URL(".", script.src);
  var api = new URL("api/v1/", base).href;
  var sameOrigin = base.origin === window.location.origin;

  // --- storage (localStorage can be disabled: fall back to memory for this page view) ---
  var memory = {};
  var prefix = "parley:" + base.origin + ":" + (user ? "u:" + user : "anon") + ":";
  function load(name) {
    try {
      return window.localStorage.getItem(prefix + name);
    } catch (e) {
      return Object.prototype.hasOwnProperty.call(memory, name) ? memory[name] : null;
    }
  }
  function save(name, value) {
    try {
      if (value === null) {
        window.localStorage.removeItem(prefix + name);
      } else {
        window.localStorage.setItem(prefix + name, value);
      }
    } catch (e) {
      if (value === null) {
        delete memory[name];
      } else {
        memory[name] = value;
      }
    }
  }
  var convKey = "conversation:" + flow;

  // --- HTTP ---
  function call(method, path, body) {
    var headers = { Accept: "application/json" };
    var token = load("token");
    if (token) {
      headers["X-Parley-Token"] = token;
    }
    var init = { method: method, headers: headers, credentials: sameOrigin ? "same-origin" : "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(api + path, init).then(
      function (response) {
        return response
          .json()
          .catch(function () {
            return {};
          })
          .then(function (data) {
            return { status: response.status, data: data, retryAfter: response.headers.get("Retry-After") };
          });
      },
      function () {
        return { status: 0, data: { error: "Could not reach the survey server." } };
      }
    );
  }

  function timezone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || null;
    } catch (e) {
      return null;
    }
  }

  // --- DOM helpers ---
  var uid = 0;
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) {
        return;
      }
      if (name === "text") {
        node.textContent = value;
      } else if (name.slice(0, 2) === "on") {
        node.addEventListener(name.slice(2), value);
      } else {
        node.setAttribute(name, value === true ? "" : value);
      }
    });
    (children || []).forEach(function (child) {
      if (child) {
        node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
      }
    });
    return node;
  }
  function nextId(name) {
    uid += 1;
    return "parley-" + name + "-" + uid;
  }

  var CSS =
    ":host{all:initial}" +
    "*{box-sizing:border-box;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}" +
    ".launcher{position:fixed;right:20px;bottom:20px;width:56px;height:56px;border-radius:50%;border:0;" +
    "background:var(--accent);color:#fff;cursor:pointer;box-shadow:0 4px 14px rgba(0,0,0,.25);z-index:2147483000;" +
    "display:flex;align-items:center;justify-content:center}" +
    ".launcher svg{width:28px;height:28px;fill:currentColor}" +
    ".panel{position:fixed;right:20px;bottom:88px;width:370px;max-width:calc(100vw - 24px);height:560px;" +
    "max-height:calc(100vh - 110px);background:#fff;color:#111827;border-radius:14px;display:flex;flex-direction:column;" +
    "box-shadow:0 10px 40px rgba(0,0,0,.25);z-index:2147483001;overflow:hidden;font-size:15px;line-height:1.4}" +
    ".panel[hidden]{display:none}" +
    "header{display:flex;align-items:center;justify-content:space-between;padding:12px 14px;background:var(--accent);color:#fff}" +
    "header h2{margin:0;font-size:16px;font-weight:600}" +
    ".close{background:transparent;border:0;color:#fff;font-size:22px;line-height:1;cursor:pointer;padding:2px 8px;border-radius:6px}" +
    ".log{flex:1;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:8px}" +
    ".msg{max-width:85%;padding:8px 12px;border-radius:12px;white-space:pre-wrap;word-wrap:break-word}" +
    ".bot{align-self:flex-start;background:#f3f4f6}" +
    ".me{align-self:flex-end;background:var(--accent);color:#fff}" +
    ".error{align-self:flex-start;background:#fef2f2;color:#991b1b;border:1px solid #fecaca}" +
    ".help{font-size:13px;color:#4b5563;margin-top:4px}" +
    ".composer{border-top:1px solid #e5e7eb;padding:12px 14px;display:flex;flex-direction:column;gap:8px}" +
    ".composer:empty{display:none}" +
    ".scale{display:flex;flex-wrap:wrap;gap:6px}" +
    // grow from nothing so 0-10 shares one row on a phone (a split scale reads as two)
    ".scale button{flex:1 1 0;min-width:22px;min-height:40px}" +
    ".ends{display:flex;justify-content:space-between;font-size:12px;color:#4b5563}" +
    ".choices{display:flex;flex-direction:column;gap:6px}" +
    "button.opt,.scale button,.send,.skip,.yesno button{border:1px solid var(--accent);background:#fff;color:var(--accent);" +
    "border-radius:8px;padding:8px 12px;font-size:15px;cursor:pointer;text-align:left}" +
    ".scale button{text-align:center;padding:8px 0}" +
    "button.opt:hover,.scale button:hover,.yesno button:hover{background:var(--accent);color:#fff}" +
    ".send{background:var(--accent);color:#fff;text-align:center}" +
    ".skip{border-color:#9ca3af;color:#374151;text-align:center}" +
    ".row{display:flex;gap:8px;justify-content:flex-end}" +
    ".yesno{display:flex;gap:8px}.yesno button{flex:1;text-align:center}" +
    "button:disabled{opacity:.5;cursor:not-allowed}" +
    "button:focus-visible,input:focus-visible,textarea:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}" +
    "fieldset{border:0;margin:0;padding:0;display:flex;flex-direction:column;gap:6px}" +
    "legend{font-size:13px;color:#4b5563;margin-bottom:4px;padding:0}" +
    "label.check{display:flex;gap:8px;align-items:flex-start;cursor:pointer}" +
    "label.check input{margin-top:3px;width:18px;height:18px}" +
    "textarea,input[type=email]{width:100%;border:1px solid #d1d5db;border-radius:8px;padding:8px 10px;font-size:15px;resize:vertical}" +
    "textarea{min-height:70px}" +
    ".counter{font-size:12px;color:#4b5563;text-align:right}" +
    "footer{padding:6px 14px 10px;font-size:12px;color:#6b7280;display:flex;gap:8px;align-items:center;flex-wrap:wrap}" +
    ".link{background:none;border:0;padding:0;color:#6b7280;text-decoration:underline;cursor:pointer;font-size:12px}" +
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}" +
    "@media (max-width:480px){.panel{right:0;bottom:0;width:100vw;max-width:100vw;height:100%;max-height:100%;border-radius:0}" +
    ".scale{gap:4px}.scale button{font-size:14px}" +
    ".launcher{right:14px;bottom:14px}}";

  // --- the widget ---
  var host = el("div", { "data-parley-widget": flow });
  var root = host.attachShadow ? host.attachShadow({ mode: "open" }) : host;
  var style = el("style", { text: CSS });
  var panelId = nextId("panel");
  var titleId = nextId("title");
  var launcher = el(
    "button",
    {
      class: "launcher",
      type: "button",
      "aria-label": "Open survey chat: " + title,
      "aria-expanded": "false",
      "aria-controls": panelId,
      onclick: function () {
        toggle(panel.hidden);
      },
    },
    []
  );
  launcher.innerHTML =
    '<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false"><path d="M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"/></svg>';
  var log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-relevant": "additions", tabindex: "0", "aria-label": "Conversation" });
  var composer = el("div", { class: "composer" });
  var footer = el("footer");
  var panel = el(
    "div",
    { class: "panel", id: panelId, role: "dialog", "aria-modal": "false", "aria-labelledby": titleId, hidden: true, "data-state": "loading" },
    [
      el("header", {}, [
        el("h2", { id: titleId, text: title }),
        el("button", { class: "close", type: "button", "aria-label": "Close survey chat", text: "\u00d7", onclick: function () { toggle(false); } }),
      ]),
      log,
      composer,
      footer,
    ]
  );
  panel.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      toggle(false);
    }
  });
  host.style.setProperty("--accent", color);
  root.appendChild(style);
  root.appendChild(launcher);
  root.appendChild(panel);

  var started = false;
  var busy = false;
  var conversation = null; // id
  var current = null; // the open Ask
  var asked = null; // the log message of the newest question

  function toggle(open) {
    panel.hidden = !open;
    launcher.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) {
      if (!started) {
        started = true;
        begin();
      }
      reveal();
      focusComposer();
    } else {
      launcher.focus();
    }
  }

  // Scroll the log to its end, but never past the start of the newest question. Call it once
  // the controls below the log are in place: they take their height from the log's.
  function reveal() {
    if (panel.hidden) {
      return;
    }
    log.scrollTop = log.scrollHeight;
    if (asked && asked.parentNode === log) {
      var above = asked.getBoundingClientRect().top - log.getBoundingClientRect().top;
      if (above < 0) {
        log.scrollTop += above - 8; // a question taller than the log: show where it begins
      }
    }
  }

  function focusComposer() {
    var target = composer.querySelector("button:not([disabled]),input,textarea") || log;
    window.setTimeout(function () {
      target.focus();
    }, 0);
  }

  function say(text, who) {
    if (!text) {
      return;
    }
    var node = el("div", { class: "msg " + (who || "bot"), text: text });
    if (who === "error") {
      node.setAttribute("role", "alert");
    }
    log.appendChild(node);
    log.scrollTop = log.scrollHeight;
  }

  function showFooter() {
    footer.textContent = "";
    if (load("opted_out")) {
      return null;
    }
    var link = el("button", { class: "link", type: "button", text: "Stop surveying me", onclick: confirmOptOut });
    footer.appendChild(link);
    return link;
  }

  // The footer's buttons are rebuilt: put focus back on the link rather than losing it.
  function restoreFooter() {
    var link = showFooter();
    if (link) {
      link.focus();
    } else {
      focusComposer();
    }
  }

  function confirmOptOut() {
    footer.textContent = "";
    var yes = el("button", { class: "link", type: "button", text: "Yes, never ask me again", onclick: optOut });
    footer.appendChild(el("span", { text: "Stop all surveys from us?" }));
    footer.appendChild(yes);
    footer.appendChild(el("button", { class: "link", type: "button", text: "Cancel", onclick: restoreFooter }));
    yes.focus();
  }

  function optOut() {
    var body = user ? { user: user, signature: signature } : {};
    call("POST", "respondents/me/opt-out", body).then(function (res) {
      if (res.status === 200) {
        if (res.data.respondent_token) {
          save("token", res.data.respondent_token); // never started: this token is the refusal
        }
        save("opted_out", "1");
        current = null;
        say("Done \u2014 we won't survey you again.");
        setState("done");
        footer.textContent = "";
        offerClose();
      } else {
        say((res.data && res.data.error) || "That did not work; please try again.", "error");
        restoreFooter();
      }
    });
  }

  function begin() {
    showFooter();
    if (load("opted_out")) {
      setState("done");
      say("You asked us not to survey you, so there is nothing here.");
      return;
    }
    var stored = load(convKey);
    if (stored && load("token")) {
      call("GET", "conversations/" + encodeURIComponent(stored)).then(function (res) {
        if (res.status === 200 && expired(res.data)) {
          restart(""); // past its time: a new one, as if the old one had never been
        } else if (res.status === 200) {
          conversation = stored;
          if (!res.data.done) {
            say("Welcome back \u2014 let's pick up where you left off.");
          }
          render(res.data.messages || [], true);
        } else if (res.status === 0 || res.status === 429 || res.status >= 500) {
          offline(res, begin);
        } else {
          save(convKey, null); // gone, or not ours: start afresh
          start();
        }
      });
    } else {
      start();
    }
  }

  function start(again) {
    var body = { flow: flow, timezone: timezone() };
    if (user) {
      body.user = user;
      body.signature = signature;
    }
    call("POST", "conversations", body).then(function (res) {
      if (res.status === 200 || res.status === 201) {
        if (res.data.respondent_token) {
          save("token", res.data.respondent_token);
        }
        conversation = res.data.id;
        save(convKey, conversation);
        if (again) {
          say(again);
        }
        render(res.data.messages || [], false);
      } else if (res.data && res.data.code === "opted_out") {
        save("opted_out", "1");
        footer.textContent = "";
        setState("done");
        say("You asked us not to survey you, so there is nothing here.");
      } else if (res.data && res.data.code === "recently_surveyed") {
        setState("done"); // the frequency cap: not an error, just not now
        say("Thanks — you answered one of our surveys recently, so there is nothing to answer now.");
      } else if (res.status === 0 || res.status === 429 || res.status >= 500) {
        offline(res, start);
      } else {
        setState("error");
        say((res.data && res.data.error) || "This survey is not available.", "error");
      }
    });
  }

  // True for a conversation that closed because it ran out of time (a GET or an answer's 409).
  function expired(data) {
    if (!data) {
      return false;
    }
    if (data.status === "expired" || (data.code === "conversation_closed" && /expired/i.test(data.error || ""))) {
      return true;
    }
    return (data.messages || []).some(function (m) { return m.type === "end" && m.reason === "expired"; });
  }

  // The stored conversation is gone (forgotten, not this person's) or expired: forget it and
  // start the flow afresh instead of failing on every click.
  // Forget the conversation (why: ``note``, said now) and start the flow afresh; "let's
  // start again" only once a new one has begun (the frequency cap may say not now).
  function restart(note) {
    save(convKey, null);
    conversation = null;
    current = null;
    asked = null;
    composer.textContent = "";
    setState("loading");
    if (note) {
      say(note);
    }
    start(note ? "Let's start again." : "");
  }

  function gone(res) {
    var code = res.data && res.data.code;
    return res.status === 404 || code === "forbidden" || code === "missing_identity";
  }

  function offline(res, retry) {
    var wait = res.status === 429 ? "Too many requests \u2014 please wait a moment." : res.data.error || "Something went wrong.";
    setState("error");
    say(wait, "error");
    composer.textContent = "";
    composer.appendChild(
      el("button", {
        class: "send",
        type: "button",
        text: "Try again",
        onclick: function () {
          composer.textContent = "";
          setState("loading");
          retry();
        },
      })
    );
    reveal();
    focusComposer();
  }

  // data-state on the panel ("loading" | "asking" | "busy" | "done" | "error") lets host pages and
  // tests follow the conversation without parsing the transcript.
  function setState(state) {
    panel.setAttribute("data-state", state);
  }

  function render(messages, resumed) {
    composer.textContent = "";
    current = null;
    messages.forEach(function (message) {
      if (message.type === "say") {
        say(message.text);
      } else if (message.type === "ask") {
        say(message.text);
        asked = log.lastChild;
        if (message.help) {
          asked.appendChild(el("div", { class: "help", text: message.help }));
        }
        current = message;
      } else if (message.type === "end") {
        var fallback = {
          completed: resumed ? "You have completed this survey \u2014 thank you!" : "That's everything \u2014 thank you!",
          stopped: "This survey was closed.",
          expired: "This survey has expired.",
          opted_out: "You won't be surveyed again.",
        };
        say(message.text || fallback[message.reason] || "Thank you!");
        save(convKey, conversation); // keep it: a reload shows it finished instead of restarting
      }
    });
    if (current) {
      composer.appendChild(controls(current));
      setState("asking");
      reveal();
      if (!panel.hidden) {
        focusComposer();
      }
    } else {
      setState("done");
      offerClose();
    }
  }

  // Nothing left to answer: keep keyboard focus inside the dialog (the control that had it
  // is gone) and offer a way out.
  function offerClose() {
    composer.textContent = "";
    composer.appendChild(
      el("button", { class: "send", type: "button", text: "Close", onclick: function () { toggle(false); } })
    );
    reveal();
    if (!panel.hidden) {
      focusComposer();
    }
  }

  function send(step, value, echo) {
    if (busy || !conversation) {
      return;
    }
    busy = true;
    setDisabled(true);
    setState("busy");
    call("POST", "conversations/" + encodeURIComponent(conversation) + "/answers", { step: step, value: value }).then(function (res) {
      busy = false;
      if (res.status === 200) {
        say(echo, "me");
        render(res.data.messages || [], false);
      } else if (res.status === 422) {
        setState("asking");
        var messages = res.data.messages || [];
        var hint = messages.filter(function (m) { return m.type === "say"; })[0];
        say((hint && hint.text) || res.data.error, "error");
        setDisabled(false);
        focusComposer();
      } else if (res.status === 409 && expired(res.data)) {
        restart("This survey had expired.");
      } else if (res.status === 409) {
        resync(); // answered elsewhere (another tab) or finished: show what is current
      } else if (res.data && res.data.code === "opted_out") {
        save("opted_out", "1");
        footer.textContent = "";
        setState("done");
        say("You asked us not to survey you, so we stopped.");
        offerClose();
      } else if (gone(res)) {
        restart("Your earlier answers are no longer here.");
      } else {
        setDisabled(false);
        setState("asking");
        say(res.status === 429 ? "Too many requests \u2014 please wait a moment and try again." : res.data.error || "Something went wrong; please try again.", "error");
      }
    });
  }

  function resync() {
    call("GET", "conversations/" + encodeURIComponent(conversation)).then(function (res) {
      if (res.status === 200 && expired(res.data)) {
        restart("This survey had expired.");
      } else if (res.status === 200) {
        render(res.data.messages || [], true);
      } else if (gone(res)) {
        restart("Your earlier answers are no longer here.");
      } else {
        setDisabled(false);
        setState(current ? "asking" : "done");
        say(res.data.error || "Something went wrong.", "error");
      }
    });
  }

  function setDisabled(flag) {
    Array.prototype.forEach.call(composer.querySelectorAll("button,input,textarea"), function (node) {
      if (flag) {
        node.setAttribute("data-was-disabled", node.disabled ? "1" : "");
        node.disabled = true;
      } else {
        node.disabled = node.getAttribute("data-was-disabled") === "1";
      }
    });
    var box = composer.querySelector(".controls");
    if (!flag && box) {
      box.dispatchEvent(new Event("parley-refresh"));
    }
  }

  // --- one control set per input kind ---
  function controls(ask) {
    var spec = ask.input || { kind: "text" };
    var kind = spec.kind;
    var box = el("div", { class: "controls", "data-kind": kind, "data-step": ask.step });
    if (kind === "nps" || kind === "csat" || kind === "ces" || kind === "rating" || (spec.min !== undefined && spec.max !== undefined)) {
      scale(ask, spec, box);
    } else if (kind === "choice") {
      choice(ask, spec, box);
    } else if (kind === "multi_choice") {
      multi(ask, spec, box);
    } else if (kind === "yes_no") {
      yesNo(ask, box);
    } else if (kind === "email") {
      email(ask, spec, box);
    } else {
      text(ask, spec, box);
    }
    if (spec.required === false && kind !== "email") {
      box.appendChild(
        el("div", { class: "row" }, [
          el("button", { class: "skip", type: "button", text: "Skip", onclick: function () { send(ask.step, null, "(skipped)"); } }),
        ])
      );
    }
    return box;
  }

  function scale(ask, spec, box) {
    var labels = spec.labels || [];
    var group = el("div", { class: "scale", role: "group", "aria-label": ask.text });
    for (var n = spec.min; n <= spec.max; n += 1) {
      (function (value) {
        var label = String(value);
        if (value === spec.min && labels[0]) {
          label += " \u2014 " + labels[0];
        } else if (value === spec.max && labels[1]) {
          label += " \u2014 " + labels[1];
        }
        group.appendChild(
          el("button", { type: "button", "aria-label": label, text: String(value), onclick: function () { send(ask.step, value, String(value)); } })
        );
      })(n);
    }
    box.appendChild(group);
    if (labels[0] || labels[1]) {
      box.appendChild(
        el("div", { class: "ends", "aria-hidden": "true" }, [el("span", { text: labels[0] || "" }), el("span", { text: labels[1] || "" })])
      );
    }
  }

  function choice(ask, spec, box) {
    var group = el("div", { class: "choices", role: "group", "aria-label": ask.text });
    (spec.choices || []).forEach(function (option) {
      group.appendChild(
        el("button", { class: "opt", type: "button", "data-value": option.value, text: option.label, onclick: function () { send(ask.step, option.value, option.label); } })
      );
    });
    box.appendChild(group);
  }

  // The same words as the Slack channel's blocks.pick_hint: "all that apply" reads as such.
  function pickHint(low, high, count) {
    if (low === high) {
      return "Pick " + low;
    }
    if (high >= count) {
      return low === 0 ? "Pick any that apply" : low === 1 ? "Pick one or more" : "Pick at least " + low;
    }
    return low === 0 ? "Pick up to " + high : "Pick " + low + " to " + high;
  }

  function multi(ask, spec, box) {
    var options = spec.choices || [];
    var low = spec.min_picks === undefined ? 1 : spec.min_picks;
    var high = spec.max_picks === undefined ? options.length : spec.max_picks;
    var hintId = nextId("hint");
    var hint = pickHint(low, high, options.length);
    var fieldset = el("fieldset", { "aria-describedby": hintId }, [el("legend", { id: hintId, text: hint })]);
    var boxes = options.map(function (option) {
      var input = el("input", { type: "checkbox", value: option.value, onchange: refresh });
      fieldset.appendChild(el("label", { class: "check" }, [input, el("span", { text: option.label })]));
      return input;
    });
    var submit = el("button", {
      class: "send",
      type: "button",
      text: "Send",
      onclick: function () {
        var picked = boxes.filter(function (b) { return b.checked; });
        var labels = picked.map(function (b) { return b.nextSibling.textContent; });
        send(ask.step, picked.map(function (b) { return b.value; }), labels.join(", ") || "(none)");
      },
    });
    function refresh() {
      if (busy) {
        return;
      }
      var count = boxes.filter(function (b) { return b.checked; }).length;
      boxes.forEach(function (b) {
        b.disabled = !b.checked && count >= high;
      });
      submit.disabled = count < low || count > high;
    }
    box.addEventListener("parley-refresh", refresh);
    box.appendChild(fieldset);
    box.appendChild(el("div", { class: "row" }, [submit]));
    refresh();
  }

  function yesNo(ask, box) {
    var group = el("div", { class: "yesno", role: "group", "aria-label": ask.text }, [
      el("button", { type: "button", text: "Yes", onclick: function () { send(ask.step, true, "Yes"); } }),
      el("button", { type: "button", text: "No", onclick: function () { send(ask.step, false, "No"); } }),
    ]);
    box.appendChild(group);
  }

  function text(ask, spec, box) {
    var max = spec.max_length || 2000;
    var counterId = nextId("counter");
    var area = el("textarea", {
      "aria-label": ask.text,
      "aria-describedby": counterId,
      maxlength: String(max),
      placeholder: spec.placeholder || "Type your answer\u2026",
      rows: "3",
    });
    var counter = el("div", { class: "counter", id: counterId, text: "0 / " + max });
    var submit = el("button", { class: "send", type: "button", text: "Send", disabled: true });
    function refresh() {
      counter.textContent = area.value.length + " / " + max;
      submit.disabled = busy || !area.value.trim();
    }
    function go() {
      var value = area.value.trim();
      if (value) {
        send(ask.step, value, value);
      }
    }
    area.addEventListener("input", refresh);
    area.addEventListener("keydown", function (event) {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        go();
      }
    });
    submit.addEventListener("click", go);
    box.addEventListener("parley-refresh", refresh);
    box.appendChild(area);
    box.appendChild(el("div", { class: "row" }, [counter, submit]));
    box.appendChild(el("div", { class: "sr", text: "Press Enter to send, Shift+Enter for a new line." }));
  }

  function email(ask, spec, box) {
    var input = el("input", { type: "email", "aria-label": "Email address", placeholder: "name@example.com", autocomplete: "email" });
    var consent = el("input", { type: "checkbox" });
    var submit = el("button", { class: "send", type: "button", text: "Send", disabled: true });
    function refresh() {
      submit.disabled = busy || !consent.checked || !input.value.trim() || !input.checkValidity();
    }
    input.addEventListener("input", refresh);
    consent.addEventListener("change", refresh);
    box.addEventListener("parley-refresh", refresh);
    submit.addEventListener("click", function () {
      send(ask.step, { email: input.value.trim(), consent: true }, input.value.trim());
    });
    box.appendChild(input);
    box.appendChild(el("label", { class: "check" }, [consent, el("span", { text: spec.consent || "You may contact me at this address." })]));
    box.appendChild(
      el("div", { class: "row" }, [
        el("button", { class: "skip", type: "button", text: "Skip", onclick: function () { send(ask.step, null, "(skipped)"); } }),
        submit,
      ])
    );
  }

  function mount() {
    if (load("opted_out") && !autoOpen) {
      return; // they asked not to be surveyed: no bubble that would only say so
    }
    document.body.appendChild(host);
    if (autoOpen) {
      toggle(true);
    }
  }
  if (document.body) {
    mount();
  } else {
    document.addEventListener("DOMContentLoaded", mount);
  }
})();
