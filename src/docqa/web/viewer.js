// The page viewer: the page a citation points at, beside the answer (a full-screen sheet on a
// phone), with the quoted sentence highlighted strongly and the rest of the passage lightly,
// scrolled into view. Previous and next page, zoom, the original file, and the keyboard (Esc
// closes, arrow keys turn pages). Formats without page images show the page's text instead,
// with the same marks.

import { ApiError, getJSON, getKey, imageData, openWithKey, paths } from "./api.js";
import { h, locate, middleCut } from "./dom.js";

const ZOOMS = [1, 1.5, 2, 3];
// On a phone a whole page is too small to read: the sheet opens at twice the screen's width.
const PHONE = window.matchMedia("(max-width: 760px)");
const PHONE_ZOOM = 2;
// Widths asked of the server: a few steps, so that most views hit its cache (and the browser's).
const WIDTH_STEP = 250;
// Highlights reach a little past the letters, as a marker pen does (page fractions).
const PAD_X = 0.003;
const PAD_Y = 0.002;

function wantedWidth(cssWidth) {
  const pixels = cssWidth * (window.devicePixelRatio || 1);
  return Math.min(2000, Math.max(WIDTH_STEP, Math.ceil(pixels / WIDTH_STEP) * WIDTH_STEP));
}

function box([x0, y0, x1, y1], className) {
  const el = h("div", { class: className, "aria-hidden": "true" });
  const left = Math.max(0, x0 - PAD_X);
  const top = Math.max(0, y0 - PAD_Y);
  el.style.left = `${left * 100}%`;
  el.style.top = `${top * 100}%`;
  el.style.width = `${(Math.min(1, x1 + PAD_X) - left) * 100}%`;
  el.style.height = `${(Math.min(1, y1 + PAD_Y) - top) * 100}%`;
  return el;
}

/** The page text as nodes, the passage marked lightly and the quotes strongly. */
function markedText(text, passage, quotes, focus) {
  const spans = [];
  const chunk = passage ? locate(text, passage) : null;
  if (chunk) spans.push({ start: chunk[0], end: chunk[1], cls: "chunk", rank: 0 });
  quotes.forEach((quote, i) => {
    const at = locate(text, quote);
    if (at) spans.push({ start: at[0], end: at[1], cls: i === focus ? "quote focus" : "quote", rank: 1 });
  });
  const cuts = [...new Set([0, text.length, ...spans.flatMap((s) => [s.start, s.end])])].sort((a, b) => a - b);
  const out = [];
  for (let i = 0; i < cuts.length - 1; i += 1) {
    const [a, b] = [cuts[i], cuts[i + 1]];
    const piece = text.slice(a, b);
    const over = spans.filter((s) => s.start <= a && b <= s.end).sort((x, y) => y.rank - x.rank)[0];
    out.push(over ? h("mark", { class: over.cls }, piece) : piece);
  }
  return out;
}

export class Viewer {
  /**
   * @param {object} els  panel, layout, title, where, back, close, prev, next, page, zoomOut,
   *   zoomIn, zoom, original, note, body
   */
  constructor(els) {
    this.els = els;
    this.state = null;
    this.ticket = 0;
    // Documents the server said have no page images: their pages are asked for as text only.
    this.textOnly = new Set();
    els.close.addEventListener("click", () => this.close());
    els.back.addEventListener("click", () => {
      const s = this.state;
      if (!s || s.page === Number(s.source.page)) return;
      s.page = Number(s.source.page);
      this.#render();
    });
    els.prev.addEventListener("click", () => this.turn(-1));
    els.next.addEventListener("click", () => this.turn(1));
    els.zoomIn.addEventListener("click", () => this.zoomBy(1));
    els.zoomOut.addEventListener("click", () => this.zoomBy(-1));
    els.original.addEventListener("click", (e) => {
      const s = this.state;
      if (!s || !getKey()) return; // without a key the link itself opens the file
      e.preventDefault();
      openWithKey(s.source.document_id, s.page, s.source.filename).catch((err) => {
        this.#note(`The file could not be opened: ${err.detail ?? err.message}`);
      });
    });
    document.addEventListener("keydown", (e) => this.#key(e));
  }

  get isOpen() {
    return !this.els.panel.hidden;
  }

  /** Show a source's page: `{source, quotes, focus, opener}` (`focus`: the quote to scroll to). */
  show({ source, quotes = [], focus = 0, opener = null }) {
    const base = PHONE.matches ? PHONE_ZOOM : 0;
    const zoom = this.state?.zoom ?? base;
    this.state = { source, quotes, focus, opener, zoom, base, page: Number(source.page) || 1, pages: null };
    this.els.panel.hidden = false;
    this.els.layout.classList.add("viewing");
    document.body.classList.add("viewer-open");
    this.#render();
    this.els.panel.focus({ preventScroll: true });
  }

  close() {
    if (!this.isOpen) return;
    this.ticket += 1;
    this.els.panel.hidden = true;
    this.els.layout.classList.remove("viewing");
    document.body.classList.remove("viewer-open");
    const opener = this.state?.opener;
    this.state = null;
    if (opener?.isConnected) opener.focus({ preventScroll: true });
  }

  turn(delta) {
    const s = this.state;
    if (!s || s.source.deleted) return;
    const page = s.page + delta;
    if (page < 1 || (s.pages && page > s.pages)) return;
    s.page = page;
    this.#render();
  }

  zoomBy(step) {
    const s = this.state;
    if (!s) return;
    const zoom = Math.min(ZOOMS.length - 1, Math.max(0, s.zoom + step));
    if (zoom === s.zoom) return;
    s.zoom = zoom;
    // The page grows at once; a sharper image follows when it is needed.
    const frame = this.els.body.querySelector(".page-frame");
    if (frame) frame.style.width = `${ZOOMS[zoom] * 100}%`;
    this.#render();
  }

  #key(e) {
    if (!this.isOpen || e.defaultPrevented || document.querySelector("dialog[open]")) return;
    if (e.key === "Escape") {
      e.preventDefault();
      this.close();
      return;
    }
    const typing = e.target.closest?.("textarea, input, select, [contenteditable]");
    if (typing || e.altKey || e.ctrlKey || e.metaKey) return;
    if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      e.preventDefault();
      this.turn(e.key === "ArrowLeft" ? -1 : 1);
    }
  }

  #header() {
    const { source, page, pages, zoom } = this.state;
    const { title, where, prev, next, original } = this.els;
    title.textContent = middleCut(source.filename, 48);
    title.title = source.filename;
    where.textContent = `Source [${source.n}]${source.page ? ` · cited on page ${source.page}` : ""}`;
    this.els.back.hidden = !source.page || page === Number(source.page) || Boolean(source.deleted);
    this.els.back.textContent = `Back to page ${source.page}`;
    this.els.page.textContent = pages ? `Page ${page} of ${pages}` : `Page ${page}`;
    prev.disabled = source.deleted || page <= 1;
    next.disabled = source.deleted || (pages !== null && page >= pages);
    this.els.zoom.textContent = `${Math.round(ZOOMS[zoom] * 100)}%`;
    this.els.zoomOut.disabled = zoom === 0;
    this.els.zoomIn.disabled = zoom === ZOOMS.length - 1;
    original.hidden = Boolean(source.deleted);
    original.href = paths.file(source.document_id, page);
  }

  #note(text) {
    this.els.note.textContent = text ?? "";
    this.els.note.hidden = !text;
  }

  async #render() {
    const ticket = ++this.ticket;
    const s = this.state;
    this.#header();
    this.#note(null);
    const { source } = s;
    if (source.deleted) {
      this.#note("This document has been deleted. Here is the passage as it was cited.");
      this.#showText(source.text ?? "", true);
      return;
    }
    this.els.panel.setAttribute("aria-busy", "true");
    this.els.body.classList.add("loading");
    const width = wantedWidth(this.els.body.clientWidth * ZOOMS[s.zoom]);
    const page = s.page;
    const id = source.document_id;
    // The page's text first: it says the image's version, which lets the browser keep the image
    // for good (the same URL without it is checked with the server each time).
    const read = await getJSON(paths.page(id, page)).catch((err) => err);
    let image = null;
    let problem = null;
    if (this.textOnly.has(id) || read?.image_version === null) {
      problem = new ApiError(404, "", "no_page_image");
    } else {
      try {
        image = await imageData(paths.pageImage(id, page, width, read?.image_version));
      } catch (err) {
        problem = err;
        if (err instanceof ApiError && err.code === "no_page_image") this.textOnly.add(id);
      }
    }
    if (ticket !== this.ticket) return;
    const pageText = read instanceof Error ? null : read;
    if (pageText) s.pages = pageText.page_count;
    this.#header();
    if (image) {
      await this.#showImage(image, ticket);
      if (ticket !== this.ticket) return; // a newer render owns the panel now
    } else if (problem instanceof ApiError && problem.code === "no_page_image" && pageText) {
      this.#showText(pageText.text, page === Number(source.page));
    } else if (problem instanceof ApiError && problem.code === "document_not_found") {
      this.#note("This document is no longer there. Here is the passage as it was cited.");
      this.#showText(source.text ?? "", true);
    } else {
      const why = problem?.detail ?? problem?.message ?? "";
      this.#note(`This page could not be shown${why ? `: ${why}` : "."}`);
      if (pageText) this.#showText(pageText.text, page === Number(source.page));
      else this.els.body.replaceChildren();
    }
    // Busy until the page is on screen and scrolled to its quote, not merely fetched: the image
    // is decoded after it arrives, and a zoomed one can take a moment.
    this.els.panel.removeAttribute("aria-busy");
    this.els.body.classList.remove("loading");
  }

  async #showImage(src, ticket) {
    const { source, quotes, focus, page, zoom } = this.state;
    const frame = h("div", { class: "page-frame" });
    frame.style.width = `${ZOOMS[zoom] * 100}%`;
    const img = h("img", { class: "page-image", alt: `Page ${page} of ${source.filename}` });
    frame.append(img);
    if (page === Number(source.page)) {
      for (const rect of source.rects ?? []) frame.append(box(rect, "hl chunk"));
      quotes.forEach((quote, i) => {
        if (quote.page != null && Number(quote.page) !== page) return;
        for (const rect of quote.rects ?? []) {
          frame.append(box(rect, i === focus ? "hl quote focus" : "hl quote"));
        }
      });
    }
    img.src = src;
    await img.decode().catch(() => {});
    if (ticket !== this.ticket) return;
    this.els.body.replaceChildren(frame);
    this.#scrollToMark(frame.querySelector(".hl.quote.focus, .hl.quote") ?? frame.querySelector(".hl.chunk"));
  }

  #showText(text, cited) {
    const { source, quotes, focus, zoom, base } = this.state;
    const marks = cited ? quotes.map((q) => q.text) : [];
    const nodes = markedText(text, cited ? source.text : "", marks, focus);
    const frame = h("div", { class: "page-text" }, ...nodes);
    // Text reflows to any width: zoom only makes the letters bigger, from the screen's own size.
    frame.style.fontSize = `${Math.max(0.85, ZOOMS[zoom] / ZOOMS[base])}em`;
    this.els.body.replaceChildren(frame);
    this.#scrollToMark(frame.querySelector("mark.focus, mark.quote") ?? frame.querySelector("mark.chunk"));
  }

  #scrollToMark(mark) {
    const body = this.els.body;
    if (!mark) {
      body.scrollTop = 0;
      return;
    }
    // Centred in the viewer's own scroll box (scrollIntoView could scroll the page too).
    const boxRect = body.getBoundingClientRect();
    const markRect = mark.getBoundingClientRect();
    body.scrollTop += markRect.top - boxRect.top - (body.clientHeight - markRect.height) / 2;
    body.scrollLeft += markRect.left - boxRect.left - (body.clientWidth - markRect.width) / 2;
  }
}
