// The documents panel's state: uploads with byte progress, live processing progress, the list,
// selection for the chat's scope, and delete. It is read back from the API on load.

import { ApiError, getJSON, paths, request, streamEvents, upload } from "./api.js";
import { sleep } from "./dom.js";
import { installDrop } from "./drop.js";
import { buildRow, renderRow, TERMINAL } from "./rows.js";

// Browsers open at most six HTTP/1.1 connections per host. Uploads and progress streams
// together must leave room for the list, deletes and the answer stream.
const UPLOAD_SLOTS = 2;
const WATCH_SLOTS = 2;
const POLL_WAITING_MS = 4000;
const PAGE_SIZE = 100;

export class DocumentList {
  /**
   * @param {object} els  the panel's elements: list, empty, count, more, listError, dropzone, input
   * @param {object} hooks  confirm(title, text) => Promise<boolean>; onChange() after any change
   */
  constructor(els, hooks) {
    this.els = els;
    this.hooks = hooks;
    this.items = new Map(); // row key -> item; the key is the document id once there is one
    this.uploadQueue = [];
    this.activeUploads = 0;
    this.watchQueue = [];
    this.activeWatches = 0;
    this.pollTimer = null;
    this.cursor = null;
    this.uploadSeq = 0;
    installDrop(els.dropzone, els.input, (files) => this.addFiles(files));
    els.more.addEventListener("click", () => this.loadMore());
  }

  // ---- what the chat needs ---------------------------------------------------------------

  /** The ticked documents, in list order. */
  selected() {
    return [...this.items.values()].filter((item) => item.selected && item.id);
  }

  nameOf(id) {
    return this.items.get(id)?.filename ?? null;
  }

  readyCount() {
    return [...this.items.values()].filter((item) => item.status === "ready").length;
  }

  clearSelection() {
    for (const item of this.items.values()) {
      if (item.selected) {
        item.selected = false;
        renderRow(item);
      }
    }
    this.#changed();
  }

  // ---- loading the list ------------------------------------------------------------------

  async load() {
    this.cursor = null;
    await this.#fetchPage(null);
  }

  async loadMore() {
    if (this.cursor) await this.#fetchPage(this.cursor);
  }

  /** Bring rows up to date after the tab was hidden (another tab may have changed things). */
  async refresh() {
    // Only rows that had a document before the request can be missing from its answer; an
    // upload that finishes meanwhile is newer than the list.
    const known = new Set([...this.items.values()].filter((i) => i.id).map((i) => i.id));
    try {
      const page = await getJSON(paths.documents({ limit: PAGE_SIZE }));
      for (const doc of [...page.documents].reverse()) {
        const item = this.items.get(doc.document_id);
        if (item) {
          if (!item.watch) this.#applyDoc(item, doc);
        } else {
          this.#insert(this.#newItem(doc.document_id, doc.filename, doc.size_bytes), "top");
          this.#applyDoc(this.items.get(doc.document_id), doc);
        }
      }
      const seen = new Set(page.documents.map((d) => d.document_id));
      if (!page.next_cursor) {
        for (const item of [...this.items.values()]) {
          if (known.has(item.id) && !seen.has(item.id) && !item.busy) this.#remove(item);
        }
      }
      this.#watchPending();
      this.#changed();
    } catch {
      // A failed background refresh changes nothing; the next one may work.
    }
  }

  async #fetchPage(cursor) {
    const { listError, more } = this.els;
    more.disabled = true;
    try {
      const params = { limit: PAGE_SIZE, ...(cursor ? { cursor } : {}) };
      const page = await getJSON(paths.documents(params));
      listError.hidden = true;
      for (const doc of page.documents) {
        let item = this.items.get(doc.document_id);
        if (!item) {
          item = this.#newItem(doc.document_id, doc.filename, doc.size_bytes);
          this.#insert(item, "bottom");
        }
        this.#applyDoc(item, doc);
      }
      this.cursor = page.next_cursor;
      this.#watchPending();
    } catch (err) {
      listError.textContent = `The document list could not be loaded: ${err.detail ?? err.message}`;
      listError.hidden = false;
    } finally {
      more.disabled = false;
      more.hidden = !this.cursor;
      this.#changed();
    }
  }

  // ---- uploads ---------------------------------------------------------------------------

  addFiles(files) {
    for (const file of files) {
      const item = this.#newItem(`upload-${++this.uploadSeq}`, file.name, file.size);
      item.status = "waiting";
      item.file = file;
      this.#insert(item, "top");
      this.uploadQueue.push(item);
    }
    this.#pumpUploads();
    this.#changed();
  }

  #pumpUploads() {
    while (this.activeUploads < UPLOAD_SLOTS && this.uploadQueue.length > 0) {
      const item = this.uploadQueue.shift();
      if (item.removed) continue;
      this.activeUploads += 1;
      this.#upload(item).finally(() => {
        this.activeUploads -= 1;
        this.#pumpUploads();
      });
    }
  }

  async #upload(item) {
    item.status = "uploading";
    item.abort = new AbortController();
    renderRow(item);
    const file = item.file;
    try {
      const result = await upload(file, {
        signal: item.abort.signal,
        onProgress: (sent, total) => {
          item.status = "uploading";
          item.note = null;
          item.sent = sent;
          item.total = total;
          renderRow(item);
        },
        onWait: (seconds) => {
          item.status = "waiting";
          item.note = `The server's upload limit was reached; trying again in ${seconds} s.`;
          renderRow(item);
        },
      });
      item.file = null;
      item.abort = null;
      this.#uploaded(item, result);
    } catch (err) {
      item.abort = null;
      if (err.name === "AbortError") {
        this.#remove(item);
        return;
      }
      item.status = "rejected";
      item.error = err.detail ?? err.message;
      renderRow(item);
    }
    this.#changed();
  }

  /** The server has the file: the row becomes the document's row. */
  #uploaded(item, result) {
    const existing = this.items.get(result.document_id);
    if (existing && existing !== item) {
      // The same bytes were uploaded before: point at that row instead of showing two.
      this.#remove(item);
      existing.note = "Already uploaded, nothing new to process.";
      renderRow(existing);
      existing.row.li.scrollIntoView({ block: "nearest" });
      this.#flash(existing);
      return;
    }
    this.items.delete(item.key);
    item.key = result.document_id;
    item.id = result.document_id;
    this.items.set(item.key, item);
    item.row.li.dataset.docId = item.id;
    item.filename = result.filename;
    item.size = result.size_bytes;
    item.status = result.status;
    item.note = result.duplicate ? "Already uploaded, nothing new to process." : null;
    renderRow(item);
    if (result.duplicate) {
      // An older document, not on the loaded page: its pages and state come from the API.
      getJSON(paths.document(item.id))
        .then((doc) => this.#applyDoc(item, doc))
        .catch(() => {})
        .finally(() => this.#watch(item));
    } else {
      this.#watch(item);
    }
  }

  // ---- live progress ---------------------------------------------------------------------

  #watchPending() {
    for (const item of this.items.values()) {
      if (item.id && !TERMINAL.has(item.status)) this.#watch(item);
    }
  }

  #watch(item) {
    if (item.watch || this.watchQueue.includes(item)) return;
    this.watchQueue.push(item);
    this.#pumpWatches();
  }

  #pumpWatches() {
    while (this.activeWatches < WATCH_SLOTS && this.watchQueue.length > 0) {
      const item = this.watchQueue.shift();
      if (item.removed || TERMINAL.has(item.status)) continue;
      this.activeWatches += 1;
      this.#follow(item).finally(() => {
        this.activeWatches -= 1;
        this.#pumpWatches();
      });
    }
    // Documents still waiting for a stream are polled, so their rows do not sit stale.
    if (this.watchQueue.length > 0 && !this.pollTimer) {
      this.pollTimer = setTimeout(() => this.#pollWaiting(), POLL_WAITING_MS);
    }
  }

  async #pollWaiting() {
    this.pollTimer = null;
    for (const item of [...this.watchQueue]) {
      try {
        this.#applyDoc(item, await getJSON(paths.document(item.id)));
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) this.#remove(item);
      }
    }
    this.watchQueue = this.watchQueue.filter((i) => !i.removed && !TERMINAL.has(i.status));
    this.#pumpWatches();
  }

  /** Follow a document's events until it is ready or failed, reconnecting after a drop. */
  async #follow(item) {
    const stop = new AbortController();
    item.watch = stop;
    let drops = 0;
    try {
      while (!stop.signal.aborted && !TERMINAL.has(item.status)) {
        try {
          for await (const message of streamEvents(paths.events(item.id), { signal: stop.signal })) {
            drops = 0;
            if (message.event === "error") {
              this.#remove(item); // deleted elsewhere
              return;
            }
            if (["progress", "ready", "failed"].includes(message.event)) {
              this.#applyDoc(item, JSON.parse(message.data));
            }
          }
        } catch (err) {
          if (stop.signal.aborted || err.name === "AbortError") return;
          if (err instanceof ApiError && err.status === 404) {
            this.#remove(item);
            return;
          }
          if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
            item.note = `Live progress stopped: ${err.detail}`;
            renderRow(item);
            return;
          }
        }
        if (TERMINAL.has(item.status)) return;
        drops += 1;
        await sleep(Math.min(15000, 500 * 2 ** drops), stop.signal);
      }
    } finally {
      item.watch = null;
    }
  }

  #applyDoc(item, doc) {
    if (item.removed) return;
    const before = item.status;
    item.filename = doc.filename ?? item.filename;
    item.size = doc.size_bytes ?? item.size;
    item.status = doc.status;
    item.stage = doc.progress?.stage ?? item.stage;
    item.percent = doc.progress?.percent ?? 0;
    item.pages = doc.page_count ?? item.pages;
    item.error = doc.error ? doc.error.message || `Processing failed (${doc.error.code}).` : null;
    if (doc.status === "failed" && item.selected) item.selected = false;
    renderRow(item);
    if (before !== item.status) this.#changed();
  }

  // ---- rows ------------------------------------------------------------------------------

  #newItem(key, filename, size) {
    const item = {
      key,
      id: key.startsWith("upload-") ? null : key,
      filename,
      size,
      status: "queued",
      sent: 0,
      total: 0,
      stage: null,
      percent: 0,
      pages: null,
      error: null,
      note: null,
      selected: false,
      removed: false,
      busy: false,
      watch: null,
      abort: null,
      file: null,
    };
    item.row = buildRow(item, {
      onToggle: (checked) => {
        item.selected = checked;
        this.#changed();
      },
      onAction: () => this.#act(item),
    });
    this.items.set(key, item);
    return item;
  }

  #insert(item, where) {
    renderRow(item);
    if (where === "top") this.els.list.prepend(item.row.li);
    else this.els.list.append(item.row.li);
  }

  #remove(item) {
    item.removed = true;
    item.watch?.abort();
    item.abort?.abort();
    if (this.items.get(item.key) === item) this.items.delete(item.key);
    item.row.li.remove();
    this.#changed();
  }

  #flash(item) {
    item.row.li.classList.remove("flash");
    void item.row.li.offsetWidth; // restart the animation
    item.row.li.classList.add("flash");
  }

  async #act(item) {
    if (!item.id) {
      // An upload that has not become a document: cancel it, or dismiss its error.
      this.#remove(item);
      return;
    }
    const ok = await this.hooks.confirm(
      `Delete “${item.filename}”?`,
      "Its file, pages and search index are removed from the server. This cannot be undone.",
    );
    if (!ok) return;
    item.busy = true;
    item.row.li.classList.add("busy");
    renderRow(item);
    try {
      await request(paths.document(item.id), { method: "DELETE" });
      this.#remove(item);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        this.#remove(item);
        return;
      }
      item.busy = false;
      item.row.li.classList.remove("busy");
      item.note = null;
      item.error = `Could not delete: ${err.detail ?? err.message}`;
      renderRow(item);
    }
  }

  #changed() {
    const all = [...this.items.values()];
    const docs = all.filter((i) => i.id);
    const ready = docs.filter((i) => i.status === "ready").length;
    this.els.count.textContent = docs.length ? `${docs.length} · ${ready} ready` : "";
    this.els.empty.hidden = all.length > 0;
    this.hooks.onChange?.();
  }
}
