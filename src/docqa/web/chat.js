// The chat panel: ask, stream the answer as it arrives, [n] citations as links to the page,
// sources with snippets, follow-up questions with history, and stop.

import { ApiError, getKey, openWithKey, paths, streamEvents } from "./api.js";
import { h, plural } from "./dom.js";

const HISTORY_MESSAGES = 10; // the last five exchanges go with a follow-up question
const CITATION = /\[(\d+(?:\s*,\s*\d+)*)\]/g;

const TITLES_BY_CODE = {
  document_not_found: "Nothing to search",
  document_not_ready: "Document not ready",
  model_unavailable: "Model server unavailable",
  model_timeout: "Model server too slow",
  model_error: "Model server error",
  rate_limited: "Too many questions",
  invalid_request: "Question not accepted",
  unauthorized: "API key needed",
};

const TITLES_BY_STATUS = {
  0: "Connection problem",
  401: "API key needed",
  403: "Not allowed",
  404: "Not found",
  409: "Document not ready",
  422: "Question not accepted",
  429: "Too many questions",
  502: "Model server error",
  503: "Model server unavailable",
  504: "Model server too slow",
};

function errorTitle(err) {
  return (
    TITLES_BY_CODE[err.code] ??
    TITLES_BY_STATUS[err.status] ??
    (err.status >= 500 ? "Server error" : "Could not answer")
  );
}

/** Link to a source's page; the href is the real file URL, so the tab's address says where. */
function citeLink(source, label) {
  const link = h("a", {
    class: "cite",
    href: paths.file(source.document_id, source.page),
    target: "_blank",
    rel: "noopener",
    title: source.page ? `${source.filename}, page ${source.page}` : source.filename,
    dataset: { n: String(source.n), documentId: source.document_id, page: String(source.page ?? "") },
  }, label);
  link.addEventListener("click", (e) => {
    if (!getKey()) return; // a plain link works while the server needs no key
    e.preventDefault();
    openWithKey(source.document_id, source.page, source.filename).catch((err) => {
      link.title = `Could not open: ${err.detail ?? err.message}`;
    });
  });
  return link;
}

/** The answer as text nodes, with every [n] (or [n, m]) that names a source made a link. */
function answerNodes(text, sources) {
  const byN = new Map(sources.map((s) => [Number(s.n), s]));
  const out = [];
  let last = 0;
  for (const match of text.matchAll(CITATION)) {
    const numbers = match[1].split(",").map((n) => Number(n.trim()));
    if (!numbers.every((n) => byN.has(n))) continue;
    out.push(text.slice(last, match.index));
    numbers.forEach((n) => out.push(citeLink(byN.get(n), `[${n}]`)));
    last = match.index + match[0].length;
  }
  out.push(text.slice(last));
  return out.filter((part) => part !== "");
}

function sourceItem(source) {
  const where = source.page ? `page ${source.page}` : "";
  return h("li", { class: "source", dataset: { n: String(source.n) } },
    citeLink(source, `[${source.n}]`),
    h("div", { class: "source-body" },
      h("div", { class: "source-title" },
        h("span", { class: "source-file", title: source.filename }, source.filename),
        where ? h("span", { class: "source-page" }, where) : null,
      ),
      h("p", { class: "snippet" }, source.text ?? ""),
    ),
  );
}

function seconds(ms) {
  return ms >= 10000 ? `${Math.round(ms / 1000)} s` : `${(ms / 1000).toFixed(1)} s`;
}

/** One question and its answer on screen. */
class Turn {
  constructor(container, question) {
    this.text = "";
    this.failed = false;
    this.sources = [];
    this.started = performance.now();
    this.status = h("div", { class: "answer-status", role: "status" },
      h("span", { class: "spinner", "aria-hidden": "true" }),
      h("span", { class: "answer-status-text" }, "Waiting for the first token…"),
    );
    this.statusText = this.status.lastChild;
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
        this.status, this.answer, this.alert, this.meta, this.sourcesBox),
    );
    this.article = container.lastChild;
    this.timer = setInterval(() => this.#tick(), 1000);
  }

  #tick() {
    const waited = Math.round((performance.now() - this.started) / 1000);
    const found = this.sources.length ? ` · ${plural(this.sources.length, "passage")} found` : "";
    this.statusText.textContent = `Waiting for the first token… ${waited} s${found}`;
  }

  setSources(sources) {
    this.sources = Array.isArray(sources) ? sources : [];
    this.sourceList.replaceChildren(...this.sources.map(sourceItem));
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

  #renderText() {
    this.answer.replaceChildren(...answerNodes(this.text, this.sources));
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

  done(info) {
    this.#stopWaiting();
    if (!this.text && !this.failed) {
      this.answer.textContent =
        info?.finish_reason === "no_sources"
          ? "Nothing in the searched documents matches this question."
          : "The model returned no text.";
      this.answer.hidden = false;
    }
    const parts = [];
    const modes = { llm: "Model answer", extractive: "Extractive answer (no model server)" };
    if (info?.mode) parts.push(modes[info.mode] ?? info.mode);
    const t = info?.timings_ms ?? {};
    if (Number.isFinite(t.first_token)) parts.push(`first token ${seconds(t.first_token)}`);
    if (Number.isFinite(t.total)) parts.push(`${seconds(t.total)} total`);
    if (info?.finish_reason === "length") parts.push("cut at the length limit");
    this.meta.textContent = parts.join(" · ");
    this.meta.hidden = parts.length === 0;
  }

  finish() {
    clearInterval(this.timer);
    this.article.removeAttribute("aria-busy");
  }
}

export class Chat {
  /**
   * @param {object} els  messages, form, question, send, stop, newChat, intro
   * @param {() => string[]} scope  the document ids to search; empty means all
   * @param {(id: string) => string | null} nameOf  a document's file name, when it is listed
   */
  constructor(els, scope, nameOf = () => null) {
    this.els = els;
    this.scope = scope;
    this.nameOf = nameOf;
    this.history = [];
    this.running = null;
    els.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.ask();
    });
    els.question.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        this.ask();
      }
    });
    els.question.addEventListener("input", () => this.#fit());
    els.stop.addEventListener("click", () => this.stop());
    els.newChat.addEventListener("click", () => this.reset());
  }

  stop() {
    this.running?.abort();
  }

  reset() {
    if (this.running) return;
    this.history = [];
    this.els.messages.replaceChildren(this.els.intro);
    this.els.intro.hidden = false;
    this.els.newChat.disabled = true;
    this.els.question.focus();
  }

  async ask() {
    const { question: input } = this.els;
    const question = input.value.trim();
    if (!question || this.running) return;
    input.value = "";
    this.#fit();
    this.els.intro.hidden = true;
    const turn = new Turn(this.els.messages, question);
    this.#scroll(true);
    const body = { question, history: this.history.slice(-HISTORY_MESSAGES) };
    const ids = this.scope();
    if (ids.length > 0) body.document_ids = ids;

    const controller = new AbortController();
    this.running = controller;
    this.#setRunning(true);
    let finished = false;
    let failed = false;
    try {
      const events = streamEvents(paths.ask, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      for await (const { event, data } of events) {
        if (event === "message") turn.addText(data);
        else if (event === "sources") turn.setSources(JSON.parse(data));
        else if (event === "error") {
          const err = JSON.parse(data);
          turn.fail(`${TITLES_BY_CODE[err.code] ?? "The answer failed"}:`, err.detail || "the server reported an error.");
          failed = true;
        } else if (event === "done") {
          turn.done(JSON.parse(data));
          finished = true;
        }
        this.#scroll(false);
      }
      if (!finished && !failed) {
        turn.fail("The answer was cut off:", "the connection closed before it finished.");
        failed = true;
      }
    } catch (err) {
      if (err.name === "AbortError") {
        turn.stopped();
      } else if (err instanceof ApiError) {
        turn.fail(`${errorTitle(err)}:`, this.#sentence(err));
        failed = true;
      } else {
        turn.fail("Something went wrong:", err.message || String(err));
        failed = true;
      }
    } finally {
      turn.finish();
      this.running = null;
      this.#setRunning(false);
      this.#scroll(false);
    }
    // Follow-ups carry what was said, including a stopped answer's part, but not failures.
    if (turn.text && !failed) {
      this.history.push({ role: "user", content: question }, { role: "assistant", content: turn.text });
    } else if (failed && !turn.text) {
      input.value = input.value || question; // let the person retry without retyping
      this.#fit();
    }
  }

  /** The server's sentence, but with a file name where it can only name a document's id. */
  #sentence(err) {
    const id = err.body?.document_id;
    const name = err.code === "document_not_ready" && id ? this.nameOf(id) : null;
    if (!name) return err.detail;
    if (err.body.status === "failed") return `“${name}” could not be processed, so it cannot be asked about.`;
    return `“${name}” is ${err.body.status ?? "still being processed"}, not ready yet; ask again when it is ready.`;
  }

  #setRunning(running) {
    const { send, stop, newChat, question } = this.els;
    send.hidden = running;
    stop.hidden = !running;
    newChat.disabled = running || this.els.messages.querySelector(".turn") === null;
    if (running) stop.focus();
    else if (document.activeElement === stop || document.activeElement === document.body) question.focus();
  }

  #fit() {
    const q = this.els.question;
    q.style.height = "auto";
    q.style.height = `${Math.min(q.scrollHeight + 2, 200)}px`;
  }

  /** Keep the newest text in view, unless the person has scrolled up to read. */
  #scroll(force) {
    const box = this.els.messages;
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 120;
    if (force || nearBottom) box.scrollTop = box.scrollHeight;
  }
}
