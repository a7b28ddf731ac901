// The ragserve chat page: lists collections, streams answers from POST /v1/ask/stream
// (Server-Sent Events read with fetch, since EventSource cannot POST), renders them as
// sanitized Markdown with clickable [n] citations, and aborts generation on Stop.
"use strict";

(() => {
  const MAX_HISTORY = 20; // messages sent back for follow-ups (the API takes at most 50)
  const SNIPPET_CHARS = 220;
  const KEY_STORE = "ragserve.apiKey"; // set when the server wants RAG_SERVER__API_KEY

  const $ = (id) => document.getElementById(id);
  const els = {
    collection: $("collection"),
    collectionHint: $("collection-hint"),
    newChat: $("new-chat"),
    error: $("error"),
    errorText: $("error-text"),
    errorClose: $("error-close"),
    conversation: $("conversation"),
    empty: $("empty"),
    form: $("ask-form"),
    question: $("question"),
    ask: $("ask"),
    stop: $("stop"),
    viewer: $("viewer"),
    viewerEmpty: $("viewer-empty"),
    viewerBody: $("viewer-body"),
    viewerN: $("viewer-n"),
    viewerTitle: $("viewer-doc-title"),
    viewerMeta: $("viewer-meta"),
    viewerText: $("viewer-text"),
    template: $("turn-template"),
    upload: $("upload"),
    notice: $("notice"),
    keyForm: $("key-form"),
    apiKey: $("api-key"),
  };

  /** Completed exchanges only: [{role, content}], sent as `messages` for follow-ups. */
  let history = [];
  /** The AbortController of the stream in flight, if any. */
  let inFlight = null;

  // ---------------------------------------------------------------- errors

  function showError(message) {
    els.errorText.textContent = message;
    els.error.hidden = false;
  }

  function clearError() {
    els.error.hidden = true;
    els.errorText.textContent = "";
  }

  function describeError(err, fallback) {
    if (err && typeof err === "object" && err.message) {
      const rid = err.request_id ? ` (request ${err.request_id})` : "";
      const text = /[.!?]$/.test(err.message) ? err.message : `${err.message}.`;
      const retry = err.retryable ? " Please try again." : "";
      return `${text}${retry}${rid}`;
    }
    return fallback;
  }

  // ---------------------------------------------------------------- API key

  /** fetch() with the stored API key; a 401 asks the user for the key. */
  async function api(path, init = {}) {
    const headers = new Headers(init.headers || {});
    const key = localStorage.getItem(KEY_STORE);
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const res = await fetch(path, { ...init, headers });
    if (res.status === 401) {
      if (key) localStorage.removeItem(KEY_STORE); // a wrong or revoked key
      els.keyForm.hidden = false;
      els.apiKey.focus();
    }
    return res;
  }

  els.keyForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = els.apiKey.value.trim();
    if (!key) return;
    localStorage.setItem(KEY_STORE, key);
    els.apiKey.value = "";
    els.keyForm.hidden = true;
    clearError();
    loadCollections();
    els.question.focus();
  });

  // ---------------------------------------------------------------- collections

  async function loadCollections() {
    try {
      const res = await api("/v1/collections", { headers: { Accept: "application/json" } });
      const body = await res.json().catch(() => null);
      if (!res.ok) {
        throw new Error(describeError(body && body.error, `HTTP ${res.status}`));
      }
      const rows = body.collections || [];
      els.collection.replaceChildren();
      for (const c of rows) {
        const opt = document.createElement("option");
        opt.value = c.name;
        opt.textContent = `${c.name} (${c.documents} docs)`;
        els.collection.append(opt);
      }
      if (!rows.length) {
        const opt = document.createElement("option");
        opt.value = "";
        opt.textContent = "no collections yet";
        els.collection.append(opt);
        els.collectionHint.textContent = "Ingest documents first (rag ingest PATH).";
      } else {
        const preferred = rows.find((c) => c.name === "default") || rows[0];
        els.collection.value = preferred.name;
        els.collectionHint.textContent = "";
      }
    } catch (e) {
      els.collection.replaceChildren(new Option("default", "default"));
      showError(`Could not list collections: ${e.message}`);
    }
  }

  // ---------------------------------------------------------------- Markdown + citations

  const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  const escapeHtml = (s) => s.replace(/[&<>"']/g, (c) => ESCAPES[c]);
  // Raw HTML in a model's answer is shown as text, never parsed: Markdown is all it may use.
  window.marked.use({ gfm: true, renderer: { html: (token) => escapeHtml(token.text) } });

  // Belt and braces: whatever Markdown produces still goes through DOMPurify.
  const PURIFY = {
    FORBID_TAGS: ["style", "img", "form", "input", "button", "textarea", "select", "iframe"],
    FORBID_ATTR: ["style"],
  };
  window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });

  const CITATION = /\[(\d+(?:\s*,\s*\d+)*)\]/g;

  /** Replace [n] / [n, m] in text nodes (not in code) with buttons for known sources. */
  function linkCitations(root, sourceCount) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {
      acceptNode(node) {
        const parent = node.parentElement; // null for text at the top of the fragment
        if (parent && parent.closest("code, pre, a")) return NodeFilter.FILTER_REJECT;
        CITATION.lastIndex = 0;
        return CITATION.test(node.nodeValue) ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_SKIP;
      },
    });
    const nodes = [];
    while (walker.nextNode()) nodes.push(walker.currentNode);
    for (const node of nodes) {
      const text = node.nodeValue;
      const frag = document.createDocumentFragment();
      let last = 0;
      CITATION.lastIndex = 0;
      for (const m of text.matchAll(CITATION)) {
        const ns = m[1].split(",").map((s) => Number(s.trim()));
        if (!ns.every((n) => n >= 1 && n <= sourceCount)) continue;
        frag.append(text.slice(last, m.index));
        for (const n of ns) {
          const b = document.createElement("button");
          b.type = "button";
          b.className = "cite";
          b.dataset.n = String(n);
          b.textContent = `[${n}]`;
          b.setAttribute("aria-label", `Show source ${n}`);
          frag.append(b);
        }
        last = m.index + m[0].length;
      }
      if (last === 0) continue;
      frag.append(text.slice(last));
      node.replaceWith(frag);
    }
  }

  function renderMarkdown(target, text, sourceCount) {
    const html = window.marked.parse(text, { async: false });
    const clean = window.DOMPurify.sanitize(html, { ...PURIFY, RETURN_DOM_FRAGMENT: true });
    linkCitations(clean, sourceCount);
    target.replaceChildren(clean);
  }

  // ---------------------------------------------------------------- sources + viewer

  function describeSource(s) {
    const parts = [s.source];
    if (s.page !== null && s.page !== undefined) parts.push(`page ${s.page}`);
    if (typeof s.score === "number") parts.push(`score ${s.score.toFixed(3)}`);
    return parts.filter(Boolean).join(" · ");
  }

  function snippet(text) {
    const flat = (text || "").replace(/\s+/g, " ").trim();
    return flat.length > SNIPPET_CHARS ? `${flat.slice(0, SNIPPET_CHARS)}…` : flat;
  }

  function renderSources(turn) {
    const box = turn.el.querySelector(".sources-box");
    const list = turn.el.querySelector(".sources");
    list.replaceChildren();
    for (const s of turn.sources) {
      const li = document.createElement("li");
      li.className = "source";
      li.dataset.n = String(s.n);
      const head = document.createElement("button");
      head.type = "button";
      head.className = "source-open";
      head.dataset.n = String(s.n);
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = String(s.n);
      const title = document.createElement("span");
      title.className = "source-title";
      title.textContent = s.title || s.source || s.doc_id;
      head.append(badge, title);
      const meta = document.createElement("p");
      meta.className = "meta";
      meta.textContent = describeSource(s);
      const snip = document.createElement("p");
      snip.className = "snippet";
      snip.textContent = snippet(s.text);
      li.append(head, meta, snip);
      list.append(li);
    }
    box.querySelector("summary").textContent = `Sources (${turn.sources.length})`;
    box.hidden = turn.sources.length === 0;
  }

  function showSource(turn, n) {
    const s = turn.sources.find((x) => x.n === n);
    if (!s) return;
    for (const li of document.querySelectorAll(".source.active")) li.classList.remove("active");
    const li = turn.el.querySelector(`.source[data-n="${n}"]`);
    if (li) {
      li.classList.add("active");
      li.closest("details").open = true;
    }
    els.viewerN.textContent = String(n);
    els.viewerTitle.textContent = s.title || s.source || s.doc_id;
    els.viewerMeta.textContent = describeSource(s);
    els.viewerText.textContent = s.text;
    els.viewerEmpty.hidden = true;
    els.viewerBody.hidden = false;
    els.viewer.classList.remove("flash");
    void els.viewer.offsetWidth; // restart the highlight animation
    els.viewer.classList.add("flash");
    els.viewer.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  // ---------------------------------------------------------------- a turn of the chat

  function newTurn(question) {
    // Earlier answers fold their sources away; the newest one shows its own.
    for (const d of els.conversation.querySelectorAll(".sources-box")) d.open = false;
    const el = els.template.content.firstElementChild.cloneNode(true);
    el.querySelector(".question").textContent = question;
    els.empty.hidden = true;
    els.conversation.append(el);
    const turn = {
      el,
      answerEl: el.querySelector(".answer"),
      statusEl: el.querySelector(".status"),
      question,
      text: "",
      sources: [],
      pending: false,
    };
    el.addEventListener("click", (ev) => {
      const b = ev.target.closest("button.cite, button.source-open");
      if (b) showSource(turn, Number(b.dataset.n));
    });
    setState(turn, "streaming", "Searching the documents…");
    el.scrollIntoView({ block: "end" });
    return turn;
  }

  function setState(turn, state, status) {
    turn.el.dataset.state = state;
    turn.answerEl.setAttribute("aria-busy", state === "streaming" ? "true" : "false");
    turn.statusEl.textContent = status;
  }

  /** Re-render at most once a frame: tokens can arrive faster than the page can paint. */
  function scheduleRender(turn) {
    if (turn.pending) return;
    turn.pending = true;
    requestAnimationFrame(() => {
      turn.pending = false;
      renderNow(turn);
    });
  }

  function renderNow(turn) {
    renderMarkdown(turn.answerEl, turn.text, turn.sources.length);
    const nearBottom =
      window.innerHeight + window.scrollY >= document.body.scrollHeight - 120;
    if (nearBottom) turn.el.scrollIntoView({ block: "end" });
  }

  // ---------------------------------------------------------------- SSE over fetch

  /** Yield {event, data, id} from a text/event-stream body (the WHATWG parsing rules). */
  async function* readEvents(body, signal) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    const onAbort = () => reader.cancel().catch(() => {});
    signal.addEventListener("abort", onAbort, { once: true });
    let buffer = "";
    let event = { event: "message", data: [], id: null };
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        // A lone \r at the end may be the first half of \r\n: wait for the next chunk.
        const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
        const lines = buffer.slice(0, cut).split(/\r\n|\r|\n/);
        buffer = lines.pop() + buffer.slice(cut);
        for (const line of lines) {
          if (line === "") {
            if (event.data.length) {
              yield { event: event.event, data: event.data.join("\n"), id: event.id };
            }
            event = { event: "message", data: [], id: event.id };
            continue;
          }
          if (line.startsWith(":")) continue; // keep-alive comment
          const colon = line.indexOf(":");
          const field = colon === -1 ? line : line.slice(0, colon);
          let val = colon === -1 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") event.event = val;
          else if (field === "data") event.data.push(val);
          else if (field === "id") event.id = val;
        }
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      reader.releaseLock();
    }
  }

  async function ask(question) {
    clearError();
    const collection = els.collection.value || undefined;
    const messages = [...history.slice(-MAX_HISTORY), { role: "user", content: question }];
    const body = messages.length > 1 ? { messages, collection } : { question, collection };

    const turn = newTurn(question);
    const controller = new AbortController();
    inFlight = controller;
    setBusy(true);

    let terminal = false;
    try {
      const res = await api("/v1/ask/stream", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!res.ok) {
        const payload = await res.json().catch(() => null);
        const message = describeError(payload && payload.error, `HTTP ${res.status}`);
        fail(turn, message);
        terminal = true;
        return;
      }
      for await (const ev of readEvents(res.body, controller.signal)) {
        const data = JSON.parse(ev.data);
        if (ev.event === "sources") {
          turn.sources = data.sources || [];
          renderSources(turn);
          setState(turn, "streaming", "Writing the answer…");
        } else if (ev.event === "token") {
          turn.text += data.text;
          scheduleRender(turn);
        } else if (ev.event === "done") {
          terminal = true;
          renderNow(turn);
          setState(turn, "done", doneStatus(data));
          history.push({ role: "user", content: question }, { role: "assistant", content: turn.text });
        } else if (ev.event === "error") {
          terminal = true;
          renderNow(turn);
          fail(turn, describeError(data.error, "The answer failed."));
        }
      }
      if (!terminal && !controller.signal.aborted) {
        fail(turn, "The connection closed before the answer was finished.");
      }
    } catch (e) {
      if (controller.signal.aborted) {
        renderNow(turn);
        setState(turn, "stopped", "Stopped.");
      } else {
        fail(turn, `Could not reach the service: ${e.message}`);
      }
    } finally {
      if (controller.signal.aborted && turn.el.dataset.state === "streaming") {
        renderNow(turn);
        setState(turn, "stopped", "Stopped.");
      }
      inFlight = null;
      setBusy(false);
    }
  }

  function fail(turn, message) {
    setState(turn, "error", "Failed.");
    turn.el.classList.add("failed");
    showError(message);
  }

  function doneStatus(data) {
    const parts = [];
    if (data.finish_reason === "length") parts.push("Cut at the token limit");
    else parts.push("Done");
    const total = data.latency_ms && data.latency_ms.total;
    if (typeof total === "number") parts.push(`${(total / 1000).toFixed(1)} s`);
    const used = data.usage && data.usage.completion_tokens;
    if (typeof used === "number") parts.push(`${used} tokens`);
    return parts.join(" · ");
  }

  function setBusy(busy) {
    els.ask.disabled = busy;
    els.stop.disabled = !busy;
    els.collection.disabled = busy;
    els.newChat.disabled = busy;
  }

  // ---------------------------------------------------------------- upload

  function showNotice(message) {
    els.notice.textContent = message;
    els.notice.hidden = !message;
  }

  /** Upload the chosen files into the selected collection (or "default"). */
  async function upload(files) {
    if (!files.length) return;
    clearError();
    const collection = els.collection.value || "default";
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    const names = Array.from(files, (f) => f.name).join(", ");
    showNotice(`Uploading ${names} to ${collection}…`);
    els.upload.disabled = true;
    try {
      const res = await api(`/v1/collections/${encodeURIComponent(collection)}/documents`, {
        method: "POST",
        headers: { Accept: "application/json" },
        body: form,
      });
      const body = await res.json().catch(() => null);
      if (!res.ok) {
        showNotice("");
        showError(describeError(body && body.error, `Upload failed: HTTP ${res.status}`));
        return;
      }
      const parts = [`${body.added} added`, `${body.updated} updated`, `${body.unchanged} unchanged`];
      showNotice(`Uploaded to ${collection}: ${parts.join(", ")} (${body.chunks} chunks).`);
      if (body.failed.length) {
        showError(`Skipped: ${body.failed.map((f) => `${f.source} (${f.reason})`).join("; ")}`);
      }
      const keep = els.collection.value;
      await loadCollections();
      if (keep) els.collection.value = keep;
    } catch (e) {
      showNotice("");
      showError(`Could not upload: ${e.message}`);
    } finally {
      els.upload.disabled = false;
      els.upload.value = "";
    }
  }

  // ---------------------------------------------------------------- wiring

  els.upload.addEventListener("change", () => upload(els.upload.files));

  els.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = els.question.value.trim();
    if (!q || inFlight) return;
    els.question.value = "";
    ask(q);
  });
  els.question.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      els.form.requestSubmit();
    }
  });
  els.stop.addEventListener("click", () => {
    if (inFlight) inFlight.abort();
  });
  els.errorClose.addEventListener("click", clearError);
  els.newChat.addEventListener("click", () => {
    history = [];
    for (const el of els.conversation.querySelectorAll(".turn")) el.remove();
    els.empty.hidden = false;
    els.viewerBody.hidden = true;
    els.viewerEmpty.hidden = false;
    clearError();
    els.question.focus();
  });
  els.collection.addEventListener("change", () => els.newChat.click());

  loadCollections();
  els.question.focus();
})();
