// The ragserve chat page: lists collections, streams answers from POST /v1/ask/stream
// (Server-Sent Events read with fetch, since EventSource cannot POST), renders them as
// sanitized Markdown with clickable [n] citations, and aborts generation on Stop. A stream that
// breaks before its end is resumed: the same request again with Last-Event-ID, which the
// server answers with the events after that one. On a server with API keys it asks for one,
// shows whose it is (GET /v1/me) and offers Upload only to keys that may write.
"use strict";

(() => {
  const MAX_HISTORY = 20; // messages sent back for follow-ups (the API takes at most 50)
  // The answer's length limit the page asks for: room for a few cited paragraphs (about 280
  // words). Without one the server's default applies; a loop is cut sooner by REPEAT below.
  const MAX_ANSWER_TOKENS = 384;
  // A degenerate answer ("a layer of a layer of …"): its last words are one run of the same
  // group of 1 to REPEAT.maxUnit words, repeated at least `times` times in a row and covering
  // at least `words` words. The page then stops the stream as Stop does.
  const REPEAT = { maxUnit: 24, times: 3, words: 12, tailChars: 4000 };
  const REPEATING = "Stopped: the answer was repeating itself.";
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
    viewerClose: $("viewer-close"),
    viewerBody: $("viewer-body"),
    viewerN: $("viewer-n"),
    viewerTitle: $("viewer-doc-title"),
    viewerMeta: $("viewer-meta"),
    viewerFile: $("viewer-file"),
    viewerOpenPdf: $("viewer-open-pdf"),
    viewerFileStatus: $("viewer-file-status"),
    viewerEvidence: $("viewer-evidence"),
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
  /** The collection the conversation is about: a change asks before it clears the chat. */
  let chosenCollection = "";

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
      els.signOut.title = `Sign out (key ${me.name}, role ${me.role})`;
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
    chosenCollection = els.collection.value;
    els.collection.title = els.collectionHint.textContent; // the hint folds away on a phone
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
  // Raw HTML in a model's answer or a document's passage is shown as text, never parsed:
  // Markdown is all it may use.
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

  /** Sanitized Markdown as a DOM fragment. A single line break is a soft wrap (CommonMark's
   * rule), so text extracted with hard line breaks (PDF, plain text) flows again. */
  function markdownFragment(text) {
    const html = window.marked.parse(text, { async: false });
    return window.DOMPurify.sanitize(html, { ...PURIFY, RETURN_DOM_FRAGMENT: true });
  }

  // Private-use characters stand for a citation (CITE_OPEN index CITE_CLOSE) or the edges of a
  // highlight while Markdown renders: they survive marked and DOMPurify untouched, so where
  // they land in the DOM is where the marker or the span is. Ones already in a text are dropped.
  const CITE_OPEN = "\uE000";
  const CITE_CLOSE = "\uE001";
  const MARK_OPEN = "\uE002";
  const MARK_CLOSE = "\uE003";
  const PRIVATE = /[\uE000-\uE003]/g;
  const PLACEHOLDER = /\uE000(\d+)\uE001/g;
  const CITATION = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
  const UNSUPPORTED = "not supported by the source";

  /** The text nodes under `root`, in document order. */
  function textNodes(root) {
    const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    const nodes = [];
    while (walker.nextNode()) nodes.push(walker.currentNode);
    return nodes;
  }

  /** The answer's [n] / [n, m] markers naming known sources: {start, end, ns, raw}, with
   * UTF-16 offsets into `text`. */
  function citationMarkers(text, sourceCount) {
    const markers = [];
    for (const m of text.matchAll(CITATION)) {
      const ns = m[1].split(",").map((s) => Number(s.trim()));
      if (!ns.every((n) => n >= 1 && n <= sourceCount)) continue;
      markers.push({ start: m.index, end: m.index + m[0].length, ns, raw: m[0] });
    }
    return markers;
  }

  /** The citation of the `done` event a marker stands for, among those of source n: the one
   * whose `marker` is this one, else whose answer_span holds it (or ends right at it), else
   * the first. */
  function citationFor(turn, n, marker) {
    const same = turn.citations.filter((c) => c.n === n);
    if (!marker) return same[0] || null;
    const exact = same.find((c) => c.marker && c.marker[0] === marker.start);
    const holds = same.find(
      (c) => c.answer && c.answer[0] <= marker.end && marker.start <= c.answer[1],
    );
    return exact || holds || same[0] || null;
  }

  function citeButton(turn, n, marker) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "cite";
    b.dataset.n = String(n);
    b.dataset.at = String(marker.start);
    b.dataset.end = String(marker.end);
    b.textContent = `[${n}]`;
    b.setAttribute("aria-label", `Show source ${n}`);
    const c = citationFor(turn, n, marker);
    if (c && c.supported === false) {
      b.classList.add("unsupported");
      b.title = UNSUPPORTED;
      b.setAttribute("aria-label", `Show source ${n} (${UNSUPPORTED})`);
    } else if (c && c.supported === true) {
      b.classList.add("supported");
    }
    return b;
  }

  /** The answer as Markdown, its citation markers (not those in code or links) as buttons. */
  function renderAnswer(turn) {
    const text = turn.text;
    const markers = citationMarkers(text, turn.sources.length);
    let source = "";
    let last = 0;
    markers.forEach((m, i) => {
      source += text.slice(last, m.start).replace(PRIVATE, "") + CITE_OPEN + i + CITE_CLOSE;
      last = m.end;
    });
    source += text.slice(last).replace(PRIVATE, "");
    const frag = markdownFragment(source);
    for (const node of textNodes(frag)) {
      const value = node.nodeValue;
      if (!value.includes(CITE_OPEN)) continue;
      const parent = node.parentElement; // null for text at the top of the fragment
      const literal = Boolean(parent && parent.closest("code, pre, a"));
      const out = document.createDocumentFragment();
      let at = 0;
      for (const m of value.matchAll(PLACEHOLDER)) {
        const marker = markers[Number(m[1])];
        out.append(value.slice(at, m.index));
        if (literal) out.append(marker.raw);
        else for (const n of marker.ns) out.append(citeButton(turn, n, marker));
        at = m.index + m[0].length;
      }
      out.append(value.slice(at));
      node.replaceWith(out);
    }
    turn.markers = markers;
    turn.answerEl.replaceChildren(frag);
  }

  // ---------------------------------------------------------------- spans of text

  /** A UTF-16 index from a count of code points: the server's offsets are Python's. */
  function utf16Index(text, points) {
    if (!/[\uD800-\uDFFF]/.test(text)) return points;
    let i = 0;
    for (let n = 0; n < points && i < text.length; n += 1) {
      i += text.codePointAt(i) > 0xffff ? 2 : 1;
    }
    return i;
  }

  /** [start, end) in UTF-16 of a {start, end} span of the server's, trimmed of white space;
   * null when absent or out of range (an older server, a changed text). */
  function spanRange(text, span) {
    if (!span || !Number.isInteger(span.start) || !Number.isInteger(span.end)) return null;
    let start = utf16Index(text, span.start);
    let end = utf16Index(text, span.end);
    if (start < 0 || end > text.length || start >= end) return null;
    while (start < end && /\s/.test(text[start])) start += 1;
    while (end > start && /\s/.test(text[end - 1])) end -= 1;
    return start < end ? [start, end] : null;
  }

  // A span that starts a line starts after its Markdown prefix (heading, list item, quote):
  // a character before "#" would unmake the heading.
  const LINE_PREFIX = /^[ \t]*(?:(?:#{1,6}|[-*+]|\d{1,9}[.)])[ \t]+|>[ \t]?)*/;

  function afterLinePrefix(text, start, end) {
    if (start > 0 && text[start - 1] !== "\n") return start;
    const prefix = LINE_PREFIX.exec(text.slice(start, end))[0].length;
    return start + prefix < end ? start + prefix : start;
  }

  /** Wrap what lies between MARK_OPEN and MARK_CLOSE in <mark>s (one per text node it spans);
   * the first mark, or null when the edges did not come through as one open then one close. */
  function wrapMarked(root) {
    const nodes = textNodes(root);
    const edges = nodes.map((n) => n.nodeValue.match(/[\uE002\uE003]/g) || []).flat();
    if (edges.join("") !== MARK_OPEN + MARK_CLOSE) return null;
    let inside = false;
    let first = null;
    for (const node of nodes) {
      const value = node.nodeValue;
      if (!inside && !value.includes(MARK_OPEN)) continue;
      const out = document.createDocumentFragment();
      for (const piece of value.split(/([\uE002\uE003])/)) {
        if (piece === MARK_OPEN) inside = true;
        else if (piece === MARK_CLOSE) inside = false;
        else if (inside && piece.trim()) {
          const mark = document.createElement("mark");
          mark.textContent = piece;
          first = first || mark;
          out.append(mark);
        } else if (piece) out.append(piece);
      }
      node.replaceWith(out);
    }
    return first;
  }

  /** The passage as text, the span in a <mark>: when Markdown would lose the span's edges. */
  function plainWithMark(text, range) {
    const wrap = document.createElement("div");
    wrap.className = "plain";
    const mark = document.createElement("mark");
    mark.textContent = text.slice(range[0], range[1]);
    wrap.append(text.slice(0, range[0]), mark, text.slice(range[1]));
    return { frag: wrap, mark };
  }

  /** Render a source's text into `target` as Markdown, the span (if any) highlighted; the
   * first <mark>, or null. Falls back to plain text with its line breaks when the span's edges
   * do not survive Markdown (inside a link's address, say). */
  function renderPassage(target, text, span) {
    const clean = (text || "").replace(PRIVATE, "");
    const range = spanRange(clean, span);
    if (range) {
      const start = afterLinePrefix(clean, range[0], range[1]);
      const marked =
        clean.slice(0, start) + MARK_OPEN + clean.slice(start, range[1]) + MARK_CLOSE +
        clean.slice(range[1]);
      const frag = markdownFragment(marked);
      const mark = wrapMarked(frag);
      if (mark) {
        target.replaceChildren(frag);
        return mark;
      }
      const plain = plainWithMark(clean, range);
      target.replaceChildren(plain.frag);
      return plain.mark;
    }
    target.replaceChildren(markdownFragment(clean));
    return null;
  }

  // ---------------------------------------------------------------- sources + viewer

  function describeSource(s) {
    const parts = [s.source];
    if (Number.isInteger(s.page)) parts.push(`p. ${s.page}`);
    if (typeof s.score === "number") parts.push(`relevance ${s.score.toFixed(2)}`);
    return parts.filter(Boolean).join(" · ");
  }

  /** A passage's words without its Markdown (a "#", "**"): what a one-line snippet shows. */
  function plainText(markdown) {
    const frag = markdownFragment((markdown || "").replace(PRIVATE, ""));
    return Array.from(frag.childNodes, (node) => node.textContent).join(" ");
  }

  function snippet(text) {
    const flat = plainText(text).replace(/\s+/g, " ").trim();
    return flat.length > SNIPPET_CHARS ? `${flat.slice(0, SNIPPET_CHARS)}…` : flat;
  }

  /** The source's sentence that best answers the question (its best_span), or null. */
  function bestSentence(s) {
    const text = s.text || "";
    const range = spanRange(text, s.best_span);
    return range ? snippet(text.slice(range[0], range[1])) : null;
  }

  function renderSources(turn) {
    const box = turn.el.querySelector(".sources-box");
    const list = turn.el.querySelector(".sources");
    const active = list.querySelector(".source.active");
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
      const best = bestSentence(s);
      snip.className = best ? "snippet best-sentence" : "snippet";
      snip.textContent = best || snippet(s.text);
      if (best) snip.title = "The passage's sentence that best answers the question";
      li.append(head, meta, snip);
      if (active && active.dataset.n === li.dataset.n) li.classList.add("active");
      list.append(li);
    }
    box.querySelector("summary").textContent = `Sources (${turn.sources.length})`;
    box.hidden = turn.sources.length === 0;
  }

  const NOTES = {
    support: "Highlighted: what supports the answer's sentence.",
    unsupported: `The citation is ${UNSUPPORTED}: highlighted, its closest passage.`,
    best: "Highlighted: the passage's best sentence for the question.",
    bestInstead: `The citation is ${UNSUPPORTED}: highlighted, its best sentence for the question.`,
  };

  /** What the drawer highlights, and the note above it: a marker's citation's supporting
   * span, else (a source opened from the list, an older server) its best sentence. */
  function evidence(turn, s, marker) {
    const c = marker ? citationFor(turn, s.n, marker) : null;
    const unsupported = Boolean(c && c.supported === false);
    if (c && c.source_span) {
      return { span: c.source_span, note: unsupported ? NOTES.unsupported : NOTES.support, unsupported };
    }
    if (s.best_span) {
      return { span: s.best_span, note: unsupported ? NOTES.bestInstead : NOTES.best, unsupported };
    }
    return { span: null, note: unsupported ? `The citation is ${UNSUPPORTED}.` : "", unsupported };
  }

  /** Where focus goes back to when the drawer closes. */
  let viewerOpener = null;
  /** The PDF source the drawer shows ({collection, s}), or null: what "Open the PDF" opens. */
  let viewerPdf = null;
  /** The blob: URL of the PDF opened last; revoked when another one opens. */
  let pdfUrl = null;

  /** A source from a PDF: its original file can open at the cited page. */
  const isPdf = (s) => Number.isInteger(s.page) || /\.pdf$/i.test(s.source || "");

  function fileStatus(text, failed = false) {
    els.viewerFileStatus.textContent = text;
    els.viewerFileStatus.classList.toggle("failed", failed);
  }

  /** The status line with a link to the fetched PDF (when the browser blocked its tab). */
  function fileLink(url) {
    fileStatus("The browser blocked the new tab: ");
    const a = document.createElement("a");
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener";
    a.textContent = "open the PDF";
    els.viewerFileStatus.append(a);
  }

  /** The drawer's "Open the PDF at p. N" for a PDF source; hidden for any other. */
  function showPdfLink(turn, s) {
    viewerPdf = isPdf(s) ? { collection: turn.collection, s } : null;
    els.viewerFile.hidden = !viewerPdf;
    els.viewerOpenPdf.disabled = false;
    fileStatus("");
    const page = Number.isInteger(s.page) ? ` at p. ${s.page}` : "";
    els.viewerOpenPdf.textContent = `Open the PDF${page}`;
  }

  /** Fetch the original (with the page's API key, which a plain link could not send) and open
   * it from a blob: URL at its page (#page=N, which Chromium's PDF viewer follows). An error
   * answer (404: not kept, or gone) is said in the drawer. */
  async function openPdf() {
    const shown = viewerPdf;
    if (!shown) return;
    const { collection, s } = shown;
    const path = `/v1/collections/${encodeURIComponent(collection)}/documents/${encodeURIComponent(s.doc_id)}/file`;
    els.viewerOpenPdf.disabled = true;
    fileStatus("Opening the PDF…");
    try {
      const res = await api(path);
      if (!res.ok) {
        if (viewerPdf === shown) fileStatus(await errorOf(res, `The PDF could not be opened (HTTP ${res.status}).`), true);
        return;
      }
      const blob = new Blob([await res.arrayBuffer()], { type: "application/pdf" });
      if (pdfUrl) URL.revokeObjectURL(pdfUrl);
      pdfUrl = URL.createObjectURL(blob);
      const url = pdfUrl + (Number.isInteger(s.page) ? `#page=${s.page}` : "");
      // A browser may block a tab opened this long after the click (a large file, a slow
      // link): then the drawer offers a link, which a click of its own opens.
      const tab = window.open(url, "_blank");
      if (tab) tab.opener = null;
      if (viewerPdf === shown) {
        if (tab) fileStatus("");
        else fileLink(url);
      }
    } catch (e) {
      if (viewerPdf === shown) fileStatus(`The PDF could not be opened: ${e.message}`, true);
    } finally {
      els.viewerOpenPdf.disabled = false;
    }
  }

  els.viewerOpenPdf.addEventListener("click", openPdf);

  function showSource(turn, n, marker = null) {
    const s = turn.sources.find((x) => x.n === n);
    if (!s) return;
    for (const li of document.querySelectorAll(".source.active")) li.classList.remove("active");
    const li = turn.el.querySelector(`.source[data-n="${n}"]`);
    if (li) {
      li.classList.add("active");
      li.closest("details").open = true;
    }
    const ev = evidence(turn, s, marker);
    els.viewerN.textContent = String(n);
    els.viewerTitle.textContent = s.title || s.source || s.doc_id;
    els.viewerMeta.textContent = describeSource(s);
    showPdfLink(turn, s);
    els.viewerEvidence.textContent = ev.note;
    els.viewerEvidence.hidden = !ev.note;
    els.viewerEvidence.classList.toggle("unsupported", ev.unsupported);
    const mark = renderPassage(els.viewerText, s.text, ev.span);
    if (mark) mark.classList.toggle("unsupported", ev.unsupported);
    if (!els.viewer.open) {
      viewerOpener = document.activeElement;
      els.viewer.showModal();
    }
    els.viewerClose.focus();
    if (mark) mark.scrollIntoView({ block: "center" });
    else els.viewerBody.scrollTop = 0;
  }

  function closeViewer() {
    if (els.viewer.open) els.viewer.close();
  }

  els.viewerClose.addEventListener("click", closeViewer);
  // A click on the backdrop lands on the dialog itself; its content fills the drawer.
  els.viewer.addEventListener("click", (ev) => {
    if (ev.target === els.viewer) closeViewer();
  });
  els.viewer.addEventListener("close", () => {
    const back = viewerOpener;
    viewerOpener = null;
    if (back && back.isConnected && typeof back.focus === "function") back.focus();
  });

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
      citations: [], // the done event's, each with `answer`: its answer_span in UTF-16
      markers: [],
      pending: false,
      stopNote: null, // the status when the page stopped the answer itself
    };
    el.addEventListener("click", (ev) => {
      const cite = ev.target.closest("button.cite");
      if (cite) {
        const marker = { start: Number(cite.dataset.at), end: Number(cite.dataset.end) };
        showSource(turn, Number(cite.dataset.n), marker);
        return;
      }
      const b = ev.target.closest("button.source-open");
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
    renderAnswer(turn);
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

  /** Where a degenerate repeat at the end of `text` begins to repeat: the index just after its
   * first copy (what is kept), or -1 when the answer is not repeating itself. Words are
   * compared lowercased, punctuation and Markdown aside; a word still being streamed (at the
   * very end) waits for its next token. */
  function repetitionCut(text) {
    const from = Math.max(0, text.length - REPEAT.tailChars);
    const words = [...text.slice(from).matchAll(/[\p{L}\p{N}]+/gu)];
    const lastWord = words[words.length - 1];
    if (lastWord && from + lastWord.index + lastWord[0].length === text.length) words.pop();
    const w = words.map((m) => m[0].toLowerCase());
    const count = w.length;
    const same = (a, b, n) => {
      for (let i = 0; i < n; i += 1) if (w[a + i] !== w[b + i]) return false;
      return true;
    };
    for (let n = 1; n <= REPEAT.maxUnit; n += 1) {
      const need = Math.max(REPEAT.times, Math.ceil(REPEAT.words / n));
      if (need * n > count) break;
      let times = 1;
      while ((times + 1) * n <= count && same(count - n, count - (times + 1) * n, n)) times += 1;
      if (times >= need) {
        const firstCopyEnd = words[count - times * n + n - 1];
        return from + firstCopyEnd.index + firstCopyEnd[0].length;
      }
    }
    return -1;
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
    const asked = messages.length > 1 ? { messages } : { question };
    const body = { ...asked, collection, max_tokens: MAX_ANSWER_TOKENS };
    const payload = JSON.stringify(body); // a resume must send the very same bytes

    const turn = newTurn(question);
    turn.collection = collection || chosenCollection || "default"; // where its sources live
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
              if (controller.signal.aborted) break; // stopped: the rest of this chunk too
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
        setState(turn, "stopped", turn.stopNote || "Stopped.");
      } else {
        fail(turn, `Could not reach the service: ${e.message}`);
      }
    } finally {
      if (controller.signal.aborted && turn.el.dataset.state === "streaming") {
        renderNow(turn);
        setState(turn, "stopped", turn.stopNote || "Stopped.");
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
      const cut = repetitionCut(turn.text);
      if (cut >= 0) {
        // Keep the answer up to its first copy of the repeat, and stop as Stop does.
        turn.text = turn.text.slice(0, cut);
        turn.stopNote = REPEATING;
        turn.el.classList.add("repeating");
        stopInFlight();
        return false;
      }
      scheduleRender(turn);
    } else if (ev.event === "done") {
      // The server computes the best sentences while the answer streams: they come with the
      // end, in the order of the sources (a source's own best_span, if sent, stays).
      if (Array.isArray(data.best_spans)) {
        data.best_spans.forEach((span, i) => {
          const s = turn.sources[i];
          if (s && span && !s.best_span) s.best_span = span;
        });
        renderSources(turn);
      }
      turn.citations = (data.citations || []).map((c) => ({
        ...c,
        answer: spanRange(turn.text, c.answer_span),
        marker: spanRange(turn.text, c.marker),
      }));
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
      chosenCollection = els.collection.value;
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
    closeViewer();
    clearError();
  }

  els.newChat.addEventListener("click", () => {
    resetChat();
    els.question.focus();
  });
  // Another collection answers from other documents: the conversation goes, once confirmed.
  els.collection.addEventListener("change", () => {
    const next = els.collection.value;
    if (next === chosenCollection) return;
    const talking = els.conversation.querySelector(".turn") !== null;
    const label = els.collection.selectedOptions[0]?.textContent || next;
    if (talking && !window.confirm(`Switch to ${label}? This clears the conversation.`)) {
      els.collection.value = chosenCollection; // cancelled: all stays as it was
      return;
    }
    chosenCollection = next;
    resetChat();
    els.question.focus();
  });

  // A phone's composer has room for a short placeholder only.
  const narrow = window.matchMedia("(max-width: 600px)");
  const fullPlaceholder = els.question.placeholder;
  const fitPlaceholder = () => {
    els.question.placeholder = narrow.matches ? "Ask a question…" : fullPlaceholder;
  };
  narrow.addEventListener("change", fitPlaceholder);
  fitPlaceholder();
  els.signOut.addEventListener("click", forgetKey);

  setBusy(false); // Ask waits for the collections
  loadSession();
  els.question.focus();
})();
