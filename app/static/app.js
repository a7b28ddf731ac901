// The ragserve chat page: lists collections, streams answers from POST /v1/ask/stream
// (Server-Sent Events read with fetch, since EventSource cannot POST), renders them as
// sanitized Markdown with clickable [n] citations, and aborts generation on Stop. A stream that
// breaks before its end is resumed: the same request again with Last-Event-ID, which the
// server answers with the events after that one. On a server with API keys it asks for one,
// shows whose it is (GET /v1/me) and offers Upload only to keys that may write.
"use strict";

(() => {
  const MAX_HISTORY = 20; // messages sent back for follow-ups (the API takes at most 50)
  const SNIPPET_CHARS = 220;
  const KEY_STORE = "ragserve.apiKey"; // set when the server wants an API key
  // Waits before each reconnect of a broken stream: all well within the server's resume
  // window (RAG_SERVER__STREAM_RESUME_S, 15 s by default).
  const RESUME_BACKOFF_MS = [250, 500, 1000, 2000, 4000];
  // A gateway's answer while the service is briefly away: worth another reconnect.
  const TRANSIENT = new Set([502, 503, 504]);

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
    uploadBox: $("upload-box"),
    notice: $("notice"),
    accessNote: $("access-note"),
    keyForm: $("key-form"),
    apiKey: $("api-key"),
    keyReason: $("key-reason"),
    session: $("session"),
    sessionName: $("session-name"),
    sessionRole: $("session-role"),
    signOut: $("sign-out"),
  };

  /** Completed exchanges only: [{role, content}], sent as `messages` for follow-ups. */
  let history = [];
  /** The AbortController of the stream in flight, if any. */
  let inFlight = null;
  /** The server's id of the stream in flight (its X-Stream-ID), once known: Stop deletes it. */
  let inFlightStream = null;
  /** The caller as GET /v1/me describes it; null until known. */
  let me = null;
  /** True when the key may read no collection: asking is pointless until another key. */
  let noAccess = false;
  /** False until the collections are listed: a question asked before would go to "default". */
  let listed = false;

  // ---------------------------------------------------------------- errors

  function showError(message) {
    els.errorText.textContent = message;
    els.error.hidden = false;
  }

  function clearError() {
    els.error.hidden = true;
    els.errorText.textContent = "";
  }

  /** Seconds from a 429's Retry-After (delta-seconds or an HTTP date), or null. */
  function retryAfterSeconds(res) {
    const value = (res.headers.get("Retry-After") || "").trim();
    if (!value) return null;
    const at = /^\d+$/.test(value) ? Date.now() + Number(value) * 1000 : Date.parse(value);
    return Number.isNaN(at) ? null : Math.max(1, Math.ceil((at - Date.now()) / 1000));
  }

  /** The local clock time a wait ends ("at 14:05:09"): a 429 can say "retry in 60 s"
   * itself, and a long wait (the day's tokens) reads better as a time. */
  function whenToRetry(seconds) {
    const at = new Date(Date.now() + seconds * 1000);
    const hms = [at.getHours(), at.getMinutes(), at.getSeconds()];
    return `at ${hms.map((n) => String(n).padStart(2, "0")).join(":")}`;
  }

  const sentence = (text) => (/[.!?]$/.test(text) ? text : `${text}.`);

  /** The server's message from its error envelope; `retryAfter` (seconds) says when to retry. */
  function describeError(err, fallback, retryAfter = null) {
    const retryAt = retryAfter === null ? "" : ` Try again ${whenToRetry(retryAfter)}.`;
    if (err && typeof err === "object" && err.message) {
      const rid = err.request_id ? ` (request ${err.request_id})` : "";
      const text = sentence(err.message);
      const retry = retryAt || (err.retryable ? " Please try again." : "");
      return `${text}${retry}${rid}`;
    }
    return `${fallback}${retryAt}`;
  }

  /** The message for an error answer: its envelope's (a 403 says what the key may not do),
   * with when to retry after a 429. */
  async function errorOf(res, fallback) {
    const body = await res.json().catch(() => null);
    const retryAfter = res.status === 429 ? retryAfterSeconds(res) : null;
    return describeError(body && body.error, fallback, retryAfter);
  }

  // ---------------------------------------------------------------- API key + who is signed in

  /** fetch() with the stored API key; a 401 forgets the key and asks for one. */
  async function api(path, init = {}) {
    const headers = new Headers(init.headers || {});
    const key = localStorage.getItem(KEY_STORE);
    if (key) headers.set("Authorization", `Bearer ${key}`);
    const res = await fetch(path, { ...init, headers });
    if (res.status === 401) {
      if (key) localStorage.removeItem(KEY_STORE); // a wrong, revoked or expired key
      const body = await res.clone().json().catch(() => null);
      const why = body && body.error && body.error.message;
      askForKey(key && why ? `The key was refused: ${sentence(why)}` : "");
    }
    return res;
  }

  function askForKey(reason) {
    me = null;
    renderSession();
    els.keyReason.textContent = reason;
    els.keyReason.hidden = !reason;
    els.keyForm.hidden = false;
    els.apiKey.focus();
  }

  /** Who is signed in (nothing on a server without keys) and whether Upload is offered. */
  function renderSession() {
    const signedIn = Boolean(me && me.auth);
    els.session.hidden = !signedIn;
    if (signedIn) {
      els.sessionName.textContent = me.name;
      els.sessionRole.textContent = me.role;
      const reads = me.collections.includes("*") ? "every collection" : me.collections.join(", ");
      els.session.title = `Role ${me.role}; reads ${reads || "no collection"}`;
    }
    const canUpload = Boolean(me && me.can_upload);
    els.uploadBox.hidden = !canUpload;
    els.upload.disabled = !canUpload;
  }

  /** Asks the server who the key is, then lists what it may read. */
  async function loadSession() {
    let res;
    try {
      res = await api("/v1/me", { headers: { Accept: "application/json" } });
    } catch (e) {
      showError(`Could not reach the service: ${e.message}`);
      return;
    }
    if (res.status === 401) {
      placeholder("enter an API key");
      return; // api() asked for the key
    }
    if (!res.ok) {
      placeholder("unavailable");
      showError(`Could not check the API key: ${await errorOf(res, `HTTP ${res.status}`)}`);
      return;
    }
    me = await res.json();
    els.keyForm.hidden = true;
    renderSession();
    await loadCollections();
  }

  function forgetKey() {
    stopInFlight(); // with the key still there: the stream is this key's
    localStorage.removeItem(KEY_STORE);
    resetChat();
    showNotice("");
    showAccessNote("");
    placeholder("enter an API key");
    noAccess = false;
    listed = false;
    setBusy(false);
    askForKey("");
  }

  els.keyForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = els.apiKey.value.trim();
    if (!key) return;
    localStorage.setItem(KEY_STORE, key);
    els.apiKey.value = "";
    els.keyForm.hidden = true;
    resetChat(); // another key may read other documents: start afresh
    loadSession();
    els.question.focus();
  });

  // ---------------------------------------------------------------- collections

  function placeholder(text) {
    els.collection.replaceChildren(new Option(text, ""));
    els.collectionHint.textContent = "";
  }

  function showAccessNote(message) {
    els.accessNote.textContent = message;
    els.accessNote.hidden = !message;
  }

  /** Why a key sees no collection: it names none, or none of them exists yet. */
  function noAccessMessage() {
    const names = me.collections;
    const who = `The API key “${me.name}”`;
    if (!names.length) {
      return `${who} may not read any collection. Ask an administrator for a key with access.`;
    }
    const exists = names.length === 1 ? "that collection does not exist" : "none of them exists";
    const create = me.can_upload ? " Upload documents to create it." : "";
    return `${who} may read only ${names.join(", ")}, and ${exists} yet.${create}`;
  }

  /** The collections the key may read (the server lists only those). */
  async function loadCollections() {
    let rows;
    listed = false;
    setBusy(Boolean(inFlight));
    try {
      const res = await api("/v1/collections", { headers: { Accept: "application/json" } });
      if (res.status === 401) {
        placeholder("enter an API key");
        return;
      }
      if (!res.ok) throw new Error(await errorOf(res, `HTTP ${res.status}`));
      rows = (await res.json()).collections || [];
    } catch (e) {
      els.collection.replaceChildren(new Option("default", "default"));
      showError(`Could not list collections: ${e.message}`);
      return;
    } finally {
      listed = true;
      setBusy(Boolean(inFlight));
    }
    els.collection.replaceChildren();
    for (const c of rows) {
      const opt = document.createElement("option");
      opt.value = c.name;
      opt.textContent = `${c.name} (${c.documents} docs)`;
      els.collection.append(opt);
    }
    const scoped = Boolean(me && me.auth && !me.collections.includes("*"));
    noAccess = !rows.length && scoped;
    if (noAccess) {
      placeholder("none for this key");
      showAccessNote(noAccessMessage());
    } else if (!rows.length) {
      placeholder("no collections yet");
      els.collectionHint.textContent = "Ingest documents first (rag ingest PATH).";
      showAccessNote("");
    } else {
      const preferred = rows.find((c) => c.name === "default") || rows[0];
      els.collection.value = preferred.name;
      els.collectionHint.textContent = "";
      showAccessNote("");
    }
    setBusy(Boolean(inFlight));
  }

  /** Where an upload goes: the selected collection, else the key's own, else "default". */
  function uploadTarget() {
    if (els.collection.value) return els.collection.value;
    const own = me && me.collections.find((c) => c !== "*");
    return own || "default";
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

  /** Resolves after `ms`, or at once when `signal` aborts (Stop during a reconnect's wait). */
  function pause(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      }, { once: true });
    });
  }

  /** Stop: abort the request and, since closing a connection leaves a resumable stream
   * generating for a while (a reconnect may follow), delete the stream on the server. */
  function stopInFlight() {
    if (!inFlight) return;
    if (inFlightStream) {
      const path = `/v1/ask/stream/${encodeURIComponent(inFlightStream)}`;
      api(path, { method: "DELETE", keepalive: true }).catch(() => {});
    }
    inFlight.abort();
  }

  async function ask(question) {
    clearError();
    const collection = els.collection.value || undefined;
    const messages = [...history.slice(-MAX_HISTORY), { role: "user", content: question }];
    const body = messages.length > 1 ? { messages, collection } : { question, collection };
    const payload = JSON.stringify(body); // a resume must send the very same bytes

    const turn = newTurn(question);
    const controller = new AbortController();
    inFlight = controller;
    inFlightStream = null;
    setBusy(true);

    let terminal = false;
    let lastId = null; // the id of the last event received: where a reconnect goes on from
    let tries = 0; // reconnects since the last event arrived
    try {
      for (;;) {
        let broken; // why the stream broke before its terminal event
        try {
          const headers = { "Content-Type": "application/json", Accept: "text/event-stream" };
          if (lastId) headers["Last-Event-ID"] = lastId;
          const res = await api("/v1/ask/stream", {
            method: "POST",
            headers,
            body: payload,
            signal: controller.signal,
          });
          if (!res.ok && !(lastId && TRANSIENT.has(res.status))) {
            // A resume the server cannot serve (404 stream_not_found) says why, like any error.
            const why = await errorOf(res, `HTTP ${res.status}`);
            fail(turn, lastId ? `The connection broke and the answer could not be resumed: ${why}` : why);
            terminal = true;
            return;
          }
          if (res.ok) {
            inFlightStream = res.headers.get("X-Stream-ID") || inFlightStream;
            if (lastId) setState(turn, "streaming", "Writing the answer…");
            for await (const ev of readEvents(res.body, controller.signal)) {
              if (ev.id) lastId = ev.id;
              tries = 0;
              terminal = handleEvent(turn, question, ev) || terminal;
            }
          }
          if (terminal || controller.signal.aborted) return;
          broken = res.ok
            ? "The connection closed before the answer was finished."
            : await errorOf(res, `HTTP ${res.status}`);
        } catch (e) {
          if (controller.signal.aborted) throw e;
          broken = `Could not reach the service: ${e.message}`;
        }
        // Nothing received yet means nothing to resume: asking again would be a new answer.
        if (!lastId || tries >= RESUME_BACKOFF_MS.length) {
          fail(turn, broken);
          return;
        }
        setState(turn, "streaming", "Reconnecting…");
        await pause(RESUME_BACKOFF_MS[tries], controller.signal);
        tries += 1;
        if (controller.signal.aborted) return;
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
      inFlightStream = null;
      setBusy(false);
    }
  }

  /** Show one event of the answer; true for a terminal one (done or error). */
  function handleEvent(turn, question, ev) {
    const data = JSON.parse(ev.data);
    if (ev.event === "sources") {
      turn.sources = data.sources || [];
      renderSources(turn);
      setState(turn, "streaming", "Writing the answer…");
    } else if (ev.event === "token") {
      turn.text += data.text;
      scheduleRender(turn);
    } else if (ev.event === "done") {
      renderNow(turn);
      setState(turn, "done", doneStatus(data));
      history.push({ role: "user", content: question }, { role: "assistant", content: turn.text });
      return true;
    } else if (ev.event === "error") {
      renderNow(turn);
      fail(turn, describeError(data.error, "The answer failed."));
      return true;
    }
    return false;
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
    els.ask.disabled = busy || noAccess || !listed;
    els.question.disabled = noAccess;
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
    const collection = uploadTarget();
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
      if (!res.ok) {
        showNotice("");
        showError(await errorOf(res, `Upload failed: HTTP ${res.status}`));
        return;
      }
      const body = await res.json();
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
      els.upload.disabled = !(me && me.can_upload);
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
  els.stop.addEventListener("click", stopInFlight);
  els.errorClose.addEventListener("click", clearError);

  function resetChat() {
    history = [];
    for (const el of els.conversation.querySelectorAll(".turn")) el.remove();
    els.empty.hidden = false;
    els.viewerBody.hidden = true;
    els.viewerEmpty.hidden = false;
    clearError();
  }

  els.newChat.addEventListener("click", () => {
    resetChat();
    els.question.focus();
  });
  els.collection.addEventListener("change", () => els.newChat.click());
  els.signOut.addEventListener("click", forgetKey);

  setBusy(false); // Ask waits for the collections
  loadSession();
  els.question.focus();
})();
