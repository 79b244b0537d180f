// The local Slack workspace in a browser. Vanilla JS, no build step, nothing from the internet.
// Message bodies arrive as HTML rendered (and escaped) by bot/local/slackemu/browser.py; everything else
// is built here from plain values with textContent, never innerHTML.
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  const params = new URLSearchParams(location.search);
  const ui = {
    me: params.get("user") || localStorage.getItem("slackemu.user") || "",
    channel: params.get("channel") || "",
    raw: "",
    state: null,
    collapsed: new Set(),
    pickerTs: null,
    timer: null,
    inflight: false,
    again: false,
    rendered: false,
    sidebarKey: "",
    // the acting member's open modal (as /ui/state gave it) and what identifies its build
    modal: null,
    modalKey: "",
    modalReturn: null,
    // what people typed, by view id then action_id: kept while they act as someone else
    drafts: new Map(),
    submitting: false,
    // /ui/view requests in flight, and a counter bumped as each starts and ends: a poll
    // answered meanwhile may predate the submit or close and must not redraw the modal
    viewBusy: 0,
    viewSeq: 0,
    confirmAccept: null,
    confirmReturn: null,
  };

  // -- polling -------------------------------------------------------------------------------
  function schedule(delay) {
    clearTimeout(ui.timer);
    ui.timer = setTimeout(poll, delay);
  }

  async function poll() {
    if (ui.inflight) {
      ui.again = true;
      return;
    }
    ui.inflight = true;
    const viewSeq = ui.viewSeq;
    try {
      const query = new URLSearchParams({ channel: ui.channel, user: ui.me });
      const res = await fetch("/ui/state?" + query, { cache: "no-store" });
      const text = await res.text();
      $("#offline").hidden = true;
      if (!res.ok) {
        showStatus(errorText(text), true);
        if (res.status === 404 && ui.channel) ui.channel = "";
      } else if (text !== ui.raw) {
        ui.raw = text;
        render(JSON.parse(text), viewSeq);
      }
    } catch (err) {
      $("#offline").hidden = false;
    } finally {
      ui.inflight = false;
      const delay = ui.again ? 0 : (ui.state && ui.state.poll_ms) || 500;
      ui.again = false;
      schedule(delay);
    }
  }

  function errorText(body) {
    try {
      return JSON.parse(body).error || body;
    } catch (err) {
      return body;
    }
  }

  async function send(path, body) {
    const payload = { user: ui.me, channel: ui.channel, ...body };
    try {
      const res = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload),
      });
      const answer = await res.json();
      if (!answer.ok) showStatus(answer.error || "failed", true);
      else if (answer.error === "no_app") showStatus("no app is connected to this workspace", true);
      else if (answer.error) showStatus(`the app did not answer (${answer.error})`, true);
      else if (answer.status && answer.status >= 300) showStatus(`the app answered HTTP ${answer.status}`, true);
      else showStatus("");
      return answer;
    } catch (err) {
      showStatus("the emulator is not reachable", true);
      return { ok: false };
    } finally {
      schedule(0);
    }
  }

  function showStatus(text, isError) {
    const node = $("#status");
    node.textContent = text;
    node.classList.toggle("error", Boolean(isError));
  }

  // -- rendering -----------------------------------------------------------------------------
  function render(state, viewSeq) {
    ui.state = state;
    if (state.me && state.me !== ui.me) ui.me = state.me;
    if (state.channel && state.channel.id !== ui.channel) ui.channel = state.channel.id;
    renderSidebar(state);
    $("#no-app").hidden = state.connected;
    const channel = state.channel;
    $("#channel-name").textContent = channel ? "#" + channel.name : "no channel";
    $("#channel-topic").textContent = channel && channel.topic ? channel.topic : "";
    $("#composer-input").placeholder = channel
      ? `Message #${channel.name}, or type /release sandbox`
      : "No channel to post in";
    const me = state.people.find((p) => p.id === state.me);
    $("#acting-name").textContent = me ? me.name : "nobody";
    renderMessages(state);
    if (ui.pickerTs && !findMessage(ui.pickerTs)) closePicker();
    // asked before the person's last submit or close answered: draw the modal next time
    if (ui.viewBusy || viewSeq !== ui.viewSeq) ui.raw = "";
    else renderModal(state.modal);
  }

  function renderSidebar(state) {
    const key = JSON.stringify([state.me, state.people, state.channels, state.channel && state.channel.id, state.members, state.team]);
    if (key === ui.sidebarKey) return;
    ui.sidebarKey = key;
    $("#team-name").textContent = state.team.name;
    document.title = (state.channel ? "#" + state.channel.name + " · " : "") + state.team.name;
    const select = $("#act-as");
    select.replaceChildren(
      ...state.people.map((p) => {
        const option = el("option", null, p.real_name && p.real_name !== p.name ? `${p.name} (${p.real_name})` : p.name);
        option.value = p.id;
        option.selected = p.id === state.me;
        return option;
      }),
    );
    $("#channels").replaceChildren(
      ...state.channels.map((c) => {
        const item = el("li");
        const button = el("button", "channel-link" + (state.channel && c.id === state.channel.id ? " active" : ""), "# " + c.name);
        button.type = "button";
        button.dataset.id = c.id;
        item.append(button);
        return item;
      }),
    );
    $("#members").replaceChildren(
      ...state.members.map((p) => {
        const item = el("li", "member" + (p.id === state.me ? " me" : ""));
        item.append(el("span", "dot" + (p.is_bot ? " bot" : "")), el("span", null, p.name + (p.is_bot ? " (app)" : "")));
        return item;
      }),
    );
  }

  function renderMessages(state) {
    const list = $("#messages");
    const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
    const focused = list.contains(document.activeElement) ? focusKey(document.activeElement) : null;
    const nodes = state.messages.map((m) => messageNode(m, false));
    if (!nodes.length) nodes.push(el("div", "empty", "No messages yet."));
    list.replaceChildren(...nodes);
    const again = focused && document.querySelector(focused);
    if (again) again.focus({ preventScroll: true });
    for (const att of list.querySelectorAll(".attachment[data-color]")) {
      const color = att.dataset.color;
      const named = { good: "#2eb886", warning: "#daa038", danger: "#a30200" }[color];
      if (named || /^#?[0-9a-fA-F]{3,8}$/.test(color)) {
        att.style.borderLeftColor = named || (color.startsWith("#") ? color : "#" + color);
      }
    }
    if (nearBottom || !ui.rendered) list.scrollTop = list.scrollHeight;
    ui.rendered = true;
  }

  const PALETTE = ["#4a154b", "#1264a3", "#2bac76", "#e01e5a", "#ecb22e", "#36c5f0", "#7c3085", "#cd5c00"];

  function avatarColor(name) {
    let hash = 0;
    for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    return PALETTE[hash % PALETTE.length];
  }

  function clock(ts) {
    return new Date(parseFloat(ts) * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function messageNode(m, isReply) {
    const row = el("div", "msg" + (isReply ? " reply" : "") + (m.ephemeral ? " ephemeral" : ""));
    row.dataset.ts = m.ts;
    const avatar = el("div", "avatar" + (m.is_bot ? " bot" : ""), (m.author || "?").slice(0, 1).toUpperCase());
    avatar.style.backgroundColor = avatarColor(m.author || "?");
    const main = el("div", "msg-main");
    if (m.ephemeral) main.append(el("div", "ephemeral-note", "👁 Only visible to you"));
    const head = el("div", "msg-head");
    head.append(el("span", "author", m.author));
    if (m.is_bot) head.append(el("span", "app-badge", "APP"));
    const time = el("span", "time", clock(m.ts));
    time.title = m.ts;
    head.append(time);
    if (m.broadcast) head.append(el("span", "broadcast-note", "replied to a thread"));
    const body = el("div", "msg-body");
    body.innerHTML = m.html; // rendered and escaped by the emulator (bot/local/slackemu/browser.py)
    if (m.edited) {
      // inline after the last run of text, as Slack shows it; a button's label is no text
      const runs = [...body.querySelectorAll(".mrk, .plain")].filter((run) => !run.closest(".bk-button"));
      (runs.length ? runs[runs.length - 1] : body).append(" ", el("span", "edited", "(edited)"));
    }
    main.append(head, body);
    if (!m.ephemeral) main.append(reactionsNode(m));
    if (!isReply && m.replies && m.replies.length) main.append(threadNode(m));
    row.append(avatar, main);
    return row;
  }

  function reactionsNode(m) {
    const bar = el("div", "reactions");
    for (const r of m.reactions) {
      const chip = el("button", "reaction" + (r.mine ? " mine" : ""));
      chip.type = "button";
      chip.dataset.name = r.name;
      chip.dataset.mine = r.mine ? "1" : "0";
      chip.title = `${r.users.join(", ")} reacted with :${r.name}:`;
      chip.append(el("span", "reaction-emoji", r.emoji || `:${r.name}:`), el("span", "reaction-count", String(r.count)));
      bar.append(chip);
    }
    const add = el("button", "add-reaction", "☺+");
    add.type = "button";
    add.title = "Add a reaction";
    bar.append(add);
    return bar;
  }

  function threadNode(m) {
    const n = m.replies.length;
    const thread = el("div", "thread");
    const collapsed = ui.collapsed.has(m.ts);
    const toggle = el("button", "thread-toggle", `${collapsed ? "▸" : "▾"} ${n} ${n === 1 ? "reply" : "replies"}`);
    toggle.type = "button";
    toggle.dataset.ts = m.ts;
    thread.append(toggle);
    if (!collapsed) {
      const replies = el("div", "replies");
      replies.append(...m.replies.map((r) => messageNode(r, true)));
      thread.append(replies);
    }
    return thread;
  }

  // A selector for a focused control that finds the same control once the channel is redrawn
  // (every change replaces its nodes), so focus is not dropped on the page.
  function focusKey(node) {
    if (!(node instanceof HTMLElement)) return null;
    if (node.id) return "#" + CSS.escape(node.id);
    const row = node.closest(".msg");
    if (!row) return null;
    const inRow = `.msg[data-ts="${CSS.escape(row.dataset.ts)}"]`;
    if (node.matches(".bk-button")) return `${inRow} .bk-button[data-action-id="${CSS.escape(node.dataset.actionId)}"]`;
    if (node.matches(".reaction")) return `${inRow} .reaction[data-name="${CSS.escape(node.dataset.name)}"]`;
    if (node.matches(".add-reaction")) return `${inRow} .add-reaction`;
    if (node.matches(".thread-toggle")) return `${inRow} .thread-toggle`;
    return null;
  }

  function restoreFocus(key) {
    const node = key && document.querySelector(key);
    const usable = node instanceof HTMLElement && !node.closest("[inert], [hidden]") && !node.disabled;
    (usable ? node : $("#composer-input")).focus();
  }

  function findMessage(ts) {
    if (!ui.state) return null;
    for (const m of ui.state.messages) {
      if (m.ts === ts) return m;
      for (const r of m.replies || []) if (r.ts === ts) return r;
    }
    return null;
  }

  // -- the reaction picker -------------------------------------------------------------------
  function openPicker(ts, anchor) {
    const picker = $("#picker");
    const message = findMessage(ts);
    const mine = new Set(message ? message.reactions.filter((r) => r.mine).map((r) => r.name) : []);
    picker.replaceChildren(
      ...ui.state.reactions.map((r) => {
        const button = el("button", "pick" + (mine.has(r.name) ? " mine" : ""), r.emoji || `:${r.name}:`);
        button.type = "button";
        button.dataset.name = r.name;
        button.title = `:${r.name}:`;
        return button;
      }),
    );
    ui.pickerTs = ts;
    picker.hidden = false;
    const box = anchor.getBoundingClientRect();
    const top = Math.min(box.bottom + 4, window.innerHeight - picker.offsetHeight - 8);
    picker.style.top = `${Math.max(8, top)}px`;
    picker.style.left = `${Math.min(box.left, window.innerWidth - picker.offsetWidth - 8)}px`;
  }

  function closePicker() {
    $("#picker").hidden = true;
    ui.pickerTs = null;
  }

  // -- modals (views.open) -------------------------------------------------------------------
  // Built once per view; afterwards only its errors change, so a poll never replaces what
  // the person is typing. It covers the channel, not the sidebar: switching members stays
  // possible, and a modal belongs to the member it was opened for.
  function renderModal(modal) {
    if (!modal) {
      if (ui.modal) hideModal();
      return;
    }
    const key = [ui.me, modal.id, modal.hash].join(" ");
    if (key !== ui.modalKey) buildModal(modal, key);
    showModalErrors(modal.errors, modal.failure);
  }

  function buildModal(modal, key) {
    if (!ui.modal) ui.modalReturn = focusKey(document.activeElement);
    ui.modal = modal;
    ui.modalKey = key;
    $("#modal-title").textContent = modal.title;
    $("#modal-close").textContent = modal.close;
    const submit = $("#modal-submit");
    submit.hidden = !modal.submit;
    submit.textContent = modal.submit || "";
    const drafts = ui.drafts.get(modal.id) || {};
    const body = $("#modal-body");
    body.replaceChildren(...modal.blocks.map((block, i) => modalBlockNode(block, i, drafts)));
    for (const button of body.querySelectorAll(".bk-button")) {
      button.disabled = true;
      button.title = "buttons inside a modal are not emulated";
    }
    closePicker();
    $("#main").inert = true;
    $("#modal-layer").hidden = false;
    if (!confirmOpen()) focusModal();
  }

  function modalBlockNode(block, index, drafts) {
    if (block.type !== "input") {
      const node = el("div", "modal-block");
      node.innerHTML = block.html; // rendered and escaped by the emulator (bot/local/slackemu/browser.py)
      return node;
    }
    const id = `modal-input-${index}`;
    const field = el("div", "modal-field");
    field.dataset.blockId = block.block_id;
    const label = el("label", "modal-label", block.label);
    label.htmlFor = id;
    if (block.optional) label.append(el("span", "optional", " (optional)"));
    const input = el(block.multiline ? "textarea" : "input", "modal-input");
    if (block.multiline) input.rows = 4;
    else input.type = "text";
    input.id = id;
    input.dataset.actionId = block.action_id;
    input.placeholder = block.placeholder;
    // not `required`: the browser's own bubble would replace Slack's error under the field
    input.setAttribute("aria-required", String(!block.optional));
    input.value = Object.hasOwn(drafts, block.action_id) ? drafts[block.action_id] : block.initial_value;
    const error = el("div", "field-error");
    error.id = `${id}-error`;
    error.hidden = true;
    const described = [error.id];
    const meta = el("div", "field-meta");
    meta.append(error);
    if (block.max_length !== null) {
      // no maxlength attribute: like Slack, let it be typed and say so on submit
      const counter = el("div", "field-count");
      counter.id = `${id}-count`;
      counter.dataset.max = String(block.max_length);
      described.push(counter.id);
      meta.append(counter);
    }
    field.append(label, input, meta);
    if (block.hint) {
      const hint = el("div", "field-hint", block.hint);
      hint.id = `${id}-hint`;
      described.push(hint.id);
      field.append(hint);
    }
    input.setAttribute("aria-describedby", described.join(" "));
    updateCount(input);
    return field;
  }

  function updateCount(input) {
    const counter = input.closest(".modal-field").querySelector(".field-count");
    if (!counter) return;
    const length = [...input.value].length; // code points, as the emulator counts
    counter.textContent = `${length}/${counter.dataset.max}`;
    counter.classList.toggle("over", length > Number(counter.dataset.max));
  }

  function showModalErrors(errors, failure) {
    const placed = new Set();
    for (const field of $("#modal-body").querySelectorAll(".modal-field")) {
      const text = errors[field.dataset.blockId] || "";
      if (text) placed.add(field.dataset.blockId);
      const error = field.querySelector(".field-error");
      error.textContent = text;
      error.hidden = !text;
      field.classList.toggle("invalid", Boolean(text));
      field.querySelector(".modal-input").setAttribute("aria-invalid", String(Boolean(text)));
    }
    // an error for a block without a field would otherwise never be seen
    const rest = Object.entries(errors).filter(([id, text]) => text && !placed.has(id));
    const general = [failure, ...rest.map(([, text]) => text)].filter(Boolean);
    const box = $("#modal-failure");
    box.textContent = general.join("\n");
    box.hidden = !general.length;
  }

  function focusModal() {
    const invalid = $("#modal-body .modal-field.invalid .modal-input");
    const submit = $("#modal-submit");
    const target = invalid || $("#modal-body .modal-input") || (submit.hidden ? $("#modal-close") : submit);
    target.focus();
  }

  function hideModal() {
    const hadFocus = $("#modal-layer").contains(document.activeElement);
    ui.modal = null;
    ui.modalKey = "";
    $("#modal-layer").hidden = true;
    $("#modal-body").replaceChildren();
    if (!confirmOpen()) {
      $("#main").inert = false;
      if (hadFocus) restoreFocus(ui.modalReturn);
    }
    ui.modalReturn = null;
  }

  async function viewAction(action, viewId, values) {
    ui.viewBusy += 1;
    ui.viewSeq += 1;
    try {
      return await send("/ui/view", { action, view_id: viewId, values });
    } finally {
      ui.viewBusy -= 1;
      ui.viewSeq += 1;
    }
  }

  function dismissModal() {
    const modal = ui.modal;
    if (!modal) return;
    ui.drafts.delete(modal.id);
    hideModal();
    viewAction("close", modal.id, {});
  }

  $("#modal-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const modal = ui.modal;
    if (!modal || ui.submitting) return;
    const values = {};
    for (const input of $("#modal-body").querySelectorAll(".modal-input")) {
      values[input.dataset.actionId] = input.value;
    }
    const submit = $("#modal-submit");
    ui.submitting = true;
    submit.disabled = true;
    let answer;
    try {
      answer = await viewAction("submit", modal.id, values);
    } finally {
      ui.submitting = false;
      submit.disabled = false;
    }
    if (ui.modal !== modal) return; // closed or replaced while the app decided
    if (!answer.ok) {
      showModalErrors({}, answer.error || "the emulator is not reachable");
    } else if (answer.closed) {
      ui.drafts.delete(modal.id);
      hideModal();
    } else {
      showModalErrors(answer.errors || {}, answer.failure);
      focusModal();
    }
  });

  $("#modal-body").addEventListener("input", (event) => {
    const input = event.target;
    if (!ui.modal || !(input instanceof Element) || !input.classList.contains("modal-input")) return;
    const drafts = ui.drafts.get(ui.modal.id) || {};
    drafts[input.dataset.actionId] = input.value;
    ui.drafts.set(ui.modal.id, drafts);
    updateCount(input);
  });

  $("#modal-x").addEventListener("click", dismissModal);
  $("#modal-close").addEventListener("click", dismissModal);

  // -- confirmation dialogs (a button's `confirm` object) -----------------------------------
  // In the page, not window.confirm: it looks like Slack's, and headless browsers dismiss
  // native dialogs on their own.
  function parseConfirm(raw) {
    if (!raw) return null;
    try {
      return JSON.parse(raw);
    } catch (err) {
      return null;
    }
  }

  function confirmOpen() {
    return !$("#confirm-layer").hidden;
  }

  function askConfirm(confirm, onAccept) {
    ui.confirmAccept = onAccept;
    ui.confirmReturn = focusKey(document.activeElement);
    $("#confirm-title").textContent = confirm.title;
    $("#confirm-text").innerHTML = confirm.html; // rendered and escaped by the emulator
    $("#confirm-deny").textContent = confirm.deny;
    const accept = $("#confirm-accept");
    accept.textContent = confirm.confirm;
    accept.className = "dialog-button " + (confirm.style === "danger" ? "danger" : "primary");
    closePicker();
    $("#main").inert = true;
    $("#confirm-layer").hidden = false;
    // the safe answer first, so Enter on a destructive action does not go ahead by accident
    $("#confirm-deny").focus();
  }

  function answerConfirm(accepted) {
    const accept = ui.confirmAccept;
    ui.confirmAccept = null;
    $("#confirm-layer").hidden = true;
    if (ui.modal) {
      focusModal();
    } else {
      $("#main").inert = false;
      restoreFocus(ui.confirmReturn);
    }
    ui.confirmReturn = null;
    if (accepted && accept) accept();
  }

  $("#confirm-accept").addEventListener("click", () => answerConfirm(true));
  $("#confirm-deny").addEventListener("click", () => answerConfirm(false));

  // -- events --------------------------------------------------------------------------------
  $("#messages").addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target : null;
    if (!target) return;
    const row = target.closest(".msg");
    const ts = row ? row.dataset.ts : null;
    const button = target.closest(".bk-button");
    if (button && ts) {
      const body = { ts, action_id: button.dataset.actionId };
      if (button.dataset.hasValue === "1") body.value = button.dataset.value;
      const url = button.dataset.url;
      const click = () => {
        send("/ui/button", body);
        if (url) window.open(url, "_blank", "noopener");
      };
      const confirm = parseConfirm(button.dataset.confirm);
      if (confirm) askConfirm(confirm, click);
      else click();
      return;
    }
    const chip = target.closest(".reaction");
    if (chip && ts) {
      send("/ui/reaction", { ts, name: chip.dataset.name, action: chip.dataset.mine === "1" ? "remove" : "add" });
      return;
    }
    const add = target.closest(".add-reaction");
    if (add && ts) {
      event.stopPropagation();
      if (ui.pickerTs === ts) closePicker();
      else openPicker(ts, add);
      return;
    }
    const toggle = target.closest(".thread-toggle");
    if (toggle) {
      const parent = toggle.dataset.ts;
      if (ui.collapsed.has(parent)) ui.collapsed.delete(parent);
      else ui.collapsed.add(parent);
      renderMessages(ui.state);
    }
  });

  $("#picker").addEventListener("click", (event) => {
    const pick = event.target instanceof Element ? event.target.closest(".pick") : null;
    if (!pick || !ui.pickerTs) return;
    const message = findMessage(ui.pickerTs);
    const mine = message && message.reactions.some((r) => r.name === pick.dataset.name && r.mine);
    send("/ui/reaction", { ts: ui.pickerTs, name: pick.dataset.name, action: mine ? "remove" : "add" });
    closePicker();
  });

  document.addEventListener("click", (event) => {
    if (!$("#picker").hidden && !(event.target instanceof Element && event.target.closest("#picker"))) closePicker();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (confirmOpen()) {
      event.preventDefault();
      answerConfirm(false);
    } else if (ui.modal) {
      event.preventDefault();
      dismissModal();
    } else {
      closePicker();
    }
  });

  $("#act-as").addEventListener("change", (event) => {
    // a confirmation belongs to the click of the member who was acting
    if (confirmOpen()) answerConfirm(false);
    ui.me = event.target.value;
    localStorage.setItem("slackemu.user", ui.me);
    remember();
    ui.raw = "";
    schedule(0);
  });

  $("#channels").addEventListener("click", (event) => {
    const link = event.target instanceof Element ? event.target.closest(".channel-link") : null;
    if (!link) return;
    ui.channel = link.dataset.id;
    ui.rendered = false;
    remember();
    schedule(0);
  });

  function remember() {
    const query = new URLSearchParams({ channel: ui.channel, user: ui.me });
    history.replaceState(null, "", "?" + query);
  }

  $("#composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = $("#composer-input");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    showStatus(text.startsWith("/") ? `sending ${text.split(/\s/)[0]}…` : "");
    const answer = await send(text.startsWith("/") ? "/ui/command" : "/ui/message", { text });
    if (!answer.ok && !input.value) input.value = text;
  });

  schedule(0);
})();
