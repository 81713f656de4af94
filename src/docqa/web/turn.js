// One question and its answer on screen: the status while it is written, the text with [n]
// citations that open the page viewer, source cards, and how it ended. A turn is built as an
// answer streams in, or at once from a conversation's stored turn.

import { fold, h, middleCut, plural } from "./dom.js";
import { paths } from "./api.js";

const CITATION = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
const SNIPPET_WORDS = 24;

function seconds(ms) {
  return ms >= 10000 ? `${Math.round(ms / 1000)} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** The first words of a passage, as a card shows them. */
function firstWords(text, count = SNIPPET_WORDS) {
  const words = fold(text).split(" ");
  return words.length > count ? `${words.slice(0, count).join(" ")}…` : words.join(" ");
}

export class Turn {
  /**
   * @param {HTMLElement} container  where the turn goes
   * @param {string} question
   * @param {(request: object) => void} onShow  open the viewer: {source, quotes, focus, opener}
   */
  constructor(container, question, onShow) {
    this.text = "";
    this.failed = false;
    this.sources = [];
    this.quotes = [];
    this.onShow = onShow;
    this.started = performance.now();
    this.status = h("div", { class: "answer-status", role: "status" },
      h("span", { class: "spinner", "aria-hidden": "true" }),
      h("span", { class: "answer-status-text" }, "Reading your documents…"),
    );
    this.statusText = this.status.lastChild;
    this.notice = h("div", { class: "notice", hidden: true });
    this.answer = h("div", { class: "answer", hidden: true });
    this.alert = h("div", { class: "alert", role: "alert", hidden: true });
    this.sourceList = h("ol", { class: "source-list" });
    this.sourceCount = h("span", {}, "Sources");
    this.sourcesBox = h("details", { class: "sources", open: true, hidden: true },
      h("summary", {}, this.sourceCount), this.sourceList);
    this.meta = h("div", { class: "answer-meta", hidden: true });
    container.append(
      h("article", { class: "turn user" }, h("div", { class: "bubble" }, question)),
      h("article", { class: "turn assistant", "aria-busy": "true" },
        this.status, this.notice, this.answer, this.alert, this.meta, this.sourcesBox),
    );
    this.article = container.lastChild;
    this.timer = setInterval(() => this.#tick(), 1000);
  }

  /** A stored turn of a conversation (`GET /api/v1/conversations/{id}`), shown as it ended. */
  static restore(container, stored, onShow) {
    const turn = new Turn(container, stored.question, onShow);
    turn.setSources(stored.sources);
    if (stored.answer) turn.addText(stored.answer);
    if (stored.finish_reason === "error") {
      turn.fail("The answer failed:", "the server reported an error while answering.");
      turn.done(stored);
    } else if (stored.interrupted) {
      turn.quotes = Array.isArray(stored.quotes) ? stored.quotes : [];
      turn.#showQuotes();
      turn.stopped();
    } else {
      turn.done(stored);
    }
    turn.finish();
    return turn;
  }

  #tick() {
    const waited = Math.round((performance.now() - this.started) / 1000);
    const found = this.sources.length ? ` · ${plural(this.sources.length, "passage")} found` : "";
    const label = this.sources.length ? "Writing the answer…" : "Reading your documents…";
    this.statusText.textContent = `${label}${waited >= 3 ? ` ${waited} s` : ""}${found}`;
  }

  setSources(sources) {
    this.sources = Array.isArray(sources) ? sources : [];
    this.sourceList.replaceChildren(...this.sources.map((s) => this.#card(s)));
    this.sourceCount.textContent = `Sources (${this.sources.length})`;
    this.sourcesBox.hidden = this.sources.length === 0;
    this.#tick();
    if (this.text) this.#renderText();
  }

  addText(delta) {
    if (!this.text) {
      this.#stopWaiting();
      this.answer.hidden = false;
    }
    this.text += delta;
    this.#renderText();
  }

  quotesOf(n) {
    return this.quotes.filter((q) => Number(q.n) === Number(n));
  }

  /** Open the viewer at source `n`; `before` is the answer text before the citation clicked. */
  show(n, opener, before = "") {
    const source = this.sources.find((s) => Number(s.n) === Number(n));
    if (!source) return;
    const quotes = this.quotesOf(n);
    // The quote this citation closes: the one that ends nearest before the marker.
    let focus = 0;
    let best = -1;
    const tail = fold(before);
    quotes.forEach((q, i) => {
      const at = tail.lastIndexOf(fold(q.text).slice(-40));
      if (at > best) {
        best = at;
        focus = i;
      }
    });
    this.onShow({ source, quotes, focus, opener });
  }

  #citeLink(source, label, before) {
    // The href is the file at its page: a middle click or a new-tab click still opens it.
    const link = h("a", {
      class: "cite",
      href: paths.file(source.document_id, source.page),
      title: source.page ? `${source.filename}, page ${source.page}` : source.filename,
      dataset: { n: String(source.n), documentId: source.document_id, page: String(source.page ?? "") },
    }, label);
    link.addEventListener("click", (e) => {
      if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
      e.preventDefault();
      this.show(source.n, link, before);
    });
    return link;
  }

  /** The answer as text nodes, with every [n] (or [n, m]) that names a source a link. */
  #renderText() {
    const byN = new Map(this.sources.map((s) => [Number(s.n), s]));
    const out = [];
    let last = 0;
    for (const match of this.text.matchAll(CITATION)) {
      const numbers = match[1].split(",").map((n) => Number(n.trim()));
      if (!numbers.every((n) => byN.has(n))) continue;
      out.push(this.text.slice(last, match.index));
      const before = this.text.slice(0, match.index);
      numbers.forEach((n) => out.push(this.#citeLink(byN.get(n), `[${n}]`, before)));
      last = match.index + match[0].length;
    }
    out.push(this.text.slice(last));
    this.answer.replaceChildren(...out.filter((part) => part !== ""));
  }

  /** A source card: its number, page and file (cut in the middle), and its first words. */
  #card(source) {
    const where = source.page ? `page ${source.page}` : "";
    const snippet = h("span", { class: "snippet" }, firstWords(source.text ?? ""));
    const label = `Show source ${source.n}: ${where ? `${where} of ` : ""}${source.filename}`;
    const card = h("button", { type: "button", class: "source-card", "aria-label": label },
      h("span", { class: "cite", "aria-hidden": "true" }, `[${source.n}]`),
      h("span", { class: "source-body" },
        h("span", { class: "source-title" },
          where ? h("span", { class: "source-page" }, where) : null,
          h("span", { class: "source-file", title: source.filename }, middleCut(source.filename)),
          source.deleted ? h("span", { class: "source-gone" }, "deleted") : null,
        ),
        snippet,
      ),
    );
    card.addEventListener("click", () => this.show(source.n, card));
    return h("li", { class: "source", dataset: { n: String(source.n) } }, card);
  }

  /** Cards of quoted sources start with the quote's words, not the passage's first line. */
  #showQuotes() {
    for (const li of this.sourceList.children) {
      const [quote] = this.quotesOf(li.dataset.n);
      if (!quote) continue;
      const snippet = li.querySelector(".snippet");
      snippet.textContent = `“${firstWords(quote.text)}”`;
      snippet.classList.add("quoted");
    }
  }

  #stopWaiting() {
    clearInterval(this.timer);
    this.status.hidden = true;
  }

  fail(title, detail) {
    this.failed = true;
    this.#stopWaiting();
    this.alert.replaceChildren(h("strong", {}, title), " ", detail);
    this.alert.hidden = false;
  }

  stopped() {
    this.#stopWaiting();
    this.meta.textContent = this.text ? "Stopped. The answer above is incomplete." : "Stopped before the answer began.";
    this.meta.hidden = false;
    this.meta.classList.add("stopped");
  }

  /** The `done` event (or a stored turn): quotes, whether it answers, and what it took. */
  done(info) {
    this.#stopWaiting();
    this.quotes = Array.isArray(info?.quotes) ? info.quotes : [];
    this.#showQuotes();
    const ended = info?.finish_reason;
    if (!this.failed && ended !== "error" && (info?.answered === false || ended === "no_sources")) {
      this.article.classList.add("not-found");
      this.notice.replaceChildren(
        h("strong", {}, "Not found in your documents."),
        " ",
        this.sources.length
          ? "Nothing in them answers this question; the closest passages are listed below."
          : "Nothing in the documents searched matches this question.",
      );
      this.notice.hidden = false;
    }
    if (!this.text && !this.failed && ended !== "no_sources") {
      this.answer.textContent = "The model returned no text.";
      this.answer.hidden = false;
    }
    const parts = [];
    const modes = { llm: "Model answer", extractive: "Extractive answer (no model server)" };
    if (info?.mode) parts.push(modes[info.mode] ?? info.mode);
    const t = info?.timings_ms ?? {};
    if (Number.isFinite(t.first_token)) parts.push(`began after ${seconds(t.first_token)}`);
    if (Number.isFinite(t.total)) parts.push(`${seconds(t.total)} in all`);
    if (ended === "length") parts.push("cut at the length limit");
    this.meta.textContent = parts.join(" · ");
    this.meta.hidden = parts.length === 0;
  }

  finish() {
    clearInterval(this.timer);
    this.article.removeAttribute("aria-busy");
  }
}
