// Switchboard console: a little vanilla JS on top of server-rendered pages (no build step).
// Live areas re-fetch their server-rendered (and so escaped) fragment when the group's event
// stream says something changed; nothing here builds HTML from message text.
(function () {
  "use strict";

  function liveArea(el) {
    const groups = (el.dataset.liveGroups || "").split(",").filter(Boolean);
    const conv = el.dataset.liveConv || "";
    const indicator = document.querySelector("[data-live-indicator]");
    let timer = null;
    const refresh = function () {
      clearTimeout(timer);
      timer = setTimeout(async function () {
        const response = await fetch(el.dataset.liveUrl, { credentials: "same-origin" });
        if (response.ok) {
          el.innerHTML = await response.text();
          el.dispatchEvent(new CustomEvent("sb:updated", { bubbles: true }));
        }
      }, 120);
    };
    const query = groups.map(function (g) { return "group=" + encodeURIComponent(g); }).join("&");
    const source = new EventSource("/api/events?" + query);
    // The stream starts at "now": an update between this page's render and the stream's start (or
    // during a reconnection) would be missed, so each (re)connection refreshes the area once.
    source.addEventListener("open", function () {
      if (indicator) indicator.dataset.state = "on";
      refresh();
    });
    source.addEventListener("error", function () { if (indicator) indicator.dataset.state = "off"; });
    source.addEventListener("update", function (event) {
      const data = JSON.parse(event.data);
      if (!conv || data.conv === conv) refresh();
    });
    source.addEventListener("revoked", function () { source.close(); });
  }

  function pollArea(el) {
    setInterval(async function () {
      const response = await fetch(el.dataset.pollUrl, { credentials: "same-origin" });
      if (response.ok) {
        const html = await response.text();
        if (html !== el.dataset.last) { el.innerHTML = html; el.dataset.last = html; }
      }
    }, 1000);
  }

  function editor(box) {
    const area = box.querySelector("textarea");
    const gutter = box.querySelector(".gutter");
    const errors = new Set((box.dataset.errorLines || "").split(",").filter(Boolean).map(Number));
    const draw = function () {
      const count = area.value.split("\n").length;
      const out = [];
      for (let i = 1; i <= count; i++) out.push(errors.has(i) ? "● " + i : String(i));
      gutter.textContent = out.join("\n");
      gutter.scrollTop = area.scrollTop;
    };
    area.addEventListener("input", draw);
    area.addEventListener("scroll", function () { gutter.scrollTop = area.scrollTop; });
    area.addEventListener("keydown", function (event) {
      if (event.key === "Tab" && !event.shiftKey) {
        event.preventDefault();
        area.setRangeText("  ", area.selectionStart, area.selectionEnd, "end");
        draw();
      }
    });
    draw();
  }

  function gotoLine(n) {
    const area = document.getElementById("source");
    if (!area) return;
    const lines = area.value.split("\n");
    let pos = 0;
    for (let i = 0; i < n - 1 && i < lines.length; i++) pos += lines[i].length + 1;
    area.focus();
    area.setSelectionRange(pos, pos + (lines[n - 1] || "").length);
    const lineHeight = area.scrollHeight / Math.max(1, lines.length);
    area.scrollTop = Math.max(0, (n - 5) * lineHeight);
  }

  document.addEventListener("click", function (event) {
    const target = event.target.closest("[data-goto-line]");
    if (target) { event.preventDefault(); gotoLine(Number(target.dataset.gotoLine)); }
    const confirmer = event.target.closest("[data-confirm]");
    if (confirmer && !window.confirm(confirmer.dataset.confirm)) event.preventDefault();
  });

  document.addEventListener("change", function (event) {
    const select = event.target.closest("select[data-canned-for]");
    if (!select || !select.value) return;
    const area = document.getElementById(select.dataset.cannedFor);
    area.value = area.value ? area.value + "\n" + select.value : select.value;
    select.selectedIndex = 0;
    area.focus();
  });

  // The agent's status (docs/assignment.md): set by the buttons, kept alive by a heartbeat while
  // this tab is open; automatic assignment gives conversations only to agents online.
  function presence(el) {
    const shown = el.querySelector("[data-presence-status]");
    const csrf = document.querySelector("meta[name=csrf-token]").content;
    const post = function (path, body) {
      return fetch(path, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
        body: JSON.stringify(body || {}),
      });
    };
    const show = async function (response) {
      if (response.ok) shown.textContent = (await response.json()).status;
    };
    fetch("/api/me/presence", { credentials: "same-origin" }).then(show);
    el.addEventListener("click", function (event) {
      const button = event.target.closest("[data-presence-set]");
      if (button) post("/api/me/presence", { status: button.dataset.presenceSet }).then(show);
    });
    setInterval(function () {
      if (shown.textContent !== "offline") post("/api/me/heartbeat").then(show);
    }, Number(el.dataset.beatS) * 1000);
  }

  document.querySelectorAll("[data-presence]").forEach(presence);
  // Suggested articles for the latest message, fetched after the page (the answerer may take a
  // moment): built with textContent only, "insert" copies the article's text into the reply box.
  function suggestions(box) {
    const state = box.querySelector("[data-suggest-state]");
    const list = box.querySelector(".suggestion-list");
    const reply = document.getElementById(box.dataset.suggestFor);
    let shown = "";
    const load = async function () {
      const response = await fetch(box.dataset.suggestUrl, { credentials: "same-origin" });
      if (response.status === 202) { setTimeout(load, 2000); return; }
      if (!response.ok) { state.textContent = "Suggestions are unavailable (" + response.status + ")."; return; }
      const data = await response.json();
      const key = data.message + "@" + data.version;
      if (key === shown) return;
      shown = key;
      list.replaceChildren();
      state.textContent = data.suggestions.length ? "" : "No article to suggest.";
      data.suggestions.forEach(function (s) {
        const item = document.createElement("li");
        item.className = "suggestion";
        item.dataset.article = s.article;
        item.dataset.lang = s.lang;
        const head = document.createElement("div");
        head.className = "suggestion-head";
        const title = document.createElement("strong");
        title.textContent = s.title;
        const meta = document.createElement("small");
        meta.className = "muted";
        meta.textContent = s.article + " · " + s.lang + " · " + s.score.toFixed(2);
        const insert = document.createElement("button");
        insert.type = "button";
        insert.textContent = "Insert";
        insert.addEventListener("click", function () {
          reply.value = reply.value ? reply.value + "\n\n" + s.text : s.text;
          reply.focus();
        });
        head.append(title, meta, insert);
        const text = document.createElement("p");
        text.className = "suggestion-text";
        text.textContent = s.text;
        item.append(head, text);
        list.append(item);
      });
    };
    load();
    // A new message arrives through the live timeline: suggest for it.
    document.addEventListener("sb:updated", load);
  }

  // SLA countdowns (docs/sla.md): the deadlines are the server's (router/slaview.py, the timer's
  // own clock); this only counts down to them, by the server's clock (its now_ms, not this
  // machine's, which may be off), turns a countdown red (class "breached") at its deadline and, on
  // a page with data-sla-url, fetches them again when the timeline changes (a reply stops a clock).
  const SLA_NAMES = { first_response: "First response", next_response: "Next response", resolution: "Resolution" };

  function duration(ms) {
    const s = Math.floor(Math.abs(ms) / 1000);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + (s % 60) + "s";
  }

  function slaClock(box) {
    const list = box.querySelector(".countdowns");
    const state = box.querySelector("[data-sla-state]");
    let offset = 0;
    const draw = function () {
      const now = Date.now() + offset;
      list.querySelectorAll("[data-deadline-ms]").forEach(function (item) {
        const left = Number(item.dataset.deadlineMs) - now;
        const late = left <= 0 || item.dataset.state === "breached";
        item.classList.toggle("breached", late);
        item.querySelector(".countdown-value").textContent = left > 0 ? duration(left) + " left" : "overdue " + duration(left);
      });
    };
    const show = function (data) {
      offset = data.now_ms - Date.now();
      state.textContent = data.error ? "The SLA clock cannot be evaluated: " + data.error
        : (data.targets.length ? "" : "No target is measured for this conversation.");
      list.replaceChildren();
      data.targets.forEach(function (t) {
        const item = document.createElement("li");
        item.className = "countdown";
        item.dataset.target = t.target;
        item.dataset.state = t.state;
        const label = document.createElement("span");
        label.textContent = SLA_NAMES[t.target] + (t.target === "next_response" ? " #" + t.cycle : "");
        const value = document.createElement("strong");
        value.className = "countdown-value";
        item.append(label, value);
        if (t.deadline_ms !== null) item.title = "due " + new Date(t.deadline_ms).toLocaleString();
        if (t.open && t.deadline_ms !== null) {
          item.dataset.deadlineMs = t.deadline_ms;
        } else {
          value.textContent = t.open ? "paused (waiting on the user)" : t.state;
          item.classList.toggle("breached", t.state === "breached");
        }
        item.classList.toggle("paused", t.paused);
        list.append(item);
      });
      draw();
    };
    show(JSON.parse(box.dataset.sla));
    setInterval(draw, 500);
    if (box.dataset.slaUrl) {
      document.addEventListener("sb:updated", async function () {
        const response = await fetch(box.dataset.slaUrl, { credentials: "same-origin" });
        if (response.ok) show(await response.json());
      });
    }
  }

  document.querySelectorAll("[data-live-url]").forEach(liveArea);
  document.querySelectorAll("[data-sla]").forEach(slaClock);
  document.querySelectorAll("[data-suggest-url]").forEach(suggestions);
  document.querySelectorAll("[data-poll-url]").forEach(pollArea);
  document.querySelectorAll(".editor").forEach(editor);
  const refresher = document.querySelector("[data-refresh-s]");
  if (refresher) setTimeout(function () { window.location.reload(); }, Number(refresher.dataset.refreshS) * 1000);
})();
