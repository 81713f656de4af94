// The chat panel: ask within the current conversation (the server keeps its history), stream
// the answer as it arrives, stop, and show a stored conversation again after a reload.

import { ApiError, getJSON, paths, sendJSON, streamEvents } from "./api.js";
import { Turn } from "./turn.js";

const CURRENT_KEY = "docqa.conversation";

const TITLES_BY_CODE = {
  document_not_found: "Nothing to search",
  document_not_ready: "Document not ready",
  conversation_not_found: "Conversation gone",
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

function remembered() {
  try {
    return localStorage.getItem(CURRENT_KEY) || null;
  } catch {
    return null;
  }
}

function remember(id) {
  try {
    if (id) localStorage.setItem(CURRENT_KEY, id);
    else localStorage.removeItem(CURRENT_KEY);
  } catch {
    // Storage disabled: the conversation lasts until the page is closed.
  }
}

export class Chat {
  /**
   * @param {object} els  messages, form, question, send, stop, newChat, intro, title
   * @param {object} hooks  scope() => document ids (empty: all); nameOf(id) => file name or
   *   null; show(request) opens the page viewer; changed(conversation) after a conversation
   *   is started, answered in or left
   */
  constructor(els, hooks) {
    this.els = els;
    this.hooks = hooks;
    this.conversation = null; // {conversation_id, title} of the one on screen, once it exists
    this.running = null;
    this.loading = 0;
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

  get currentId() {
    return this.conversation?.conversation_id ?? null;
  }

  stop() {
    this.running?.abort();
  }

  /** Leave the conversation on screen for a new, empty one (made on its first question). */
  reset() {
    if (this.running) return;
    this.loading += 1; // a conversation still loading must not appear after this
    this.#setConversation(null);
    this.els.messages.replaceChildren(this.els.intro);
    this.els.intro.hidden = false;
    this.els.newChat.disabled = true;
    this.els.question.focus();
  }

  /** Show the conversation kept from the last visit, if there is one. */
  async restore() {
    const id = remembered();
    if (id) await this.open(id, { quiet: true });
  }

  /** Show a stored conversation, and ask on in it. */
  async open(id, { quiet = false } = {}) {
    if (this.running) return false;
    const ticket = ++this.loading;
    let stored;
    try {
      stored = await getJSON(paths.conversation(id));
    } catch (err) {
      if (ticket !== this.loading) return false;
      if (err instanceof ApiError && err.code === "conversation_not_found") remember(null);
      if (!quiet) throw err;
      return false;
    }
    if (ticket !== this.loading) return false;
    this.els.messages.replaceChildren(this.els.intro);
    this.els.intro.hidden = stored.turns.length > 0;
    for (const turn of stored.turns) Turn.restore(this.els.messages, turn, this.hooks.show);
    this.#setConversation(stored);
    this.els.newChat.disabled = false;
    this.els.messages.scrollTop = this.els.messages.scrollHeight;
    return true;
  }

  /** A conversation was renamed or deleted elsewhere on the page. */
  changed(conversation, { deleted = false } = {}) {
    if (conversation.conversation_id !== this.currentId) return;
    if (deleted) {
      this.conversation = null; // the next question starts a new one
      this.running ? remember(null) : this.reset();
    } else {
      this.#setConversation({ ...this.conversation, ...conversation });
    }
  }

  #setConversation(conversation) {
    this.conversation = conversation;
    remember(conversation?.conversation_id ?? null);
    const title = conversation?.title ?? "";
    this.els.title.textContent = title;
    this.els.title.title = title;
    this.els.title.hidden = !title;
  }

  async ask() {
    const { question: input } = this.els;
    const question = input.value.trim();
    if (!question || this.running) return;
    input.value = "";
    this.#fit();
    this.els.intro.hidden = true;
    const turn = new Turn(this.els.messages, question, this.hooks.show);
    this.#scroll(true);

    const controller = new AbortController();
    this.running = controller;
    this.#setRunning(true);
    let finished = false;
    let failed = false;
    try {
      if (!this.conversation) {
        const created = await sendJSON(paths.conversations(), "POST", {}, { signal: controller.signal });
        this.#setConversation(created);
        this.hooks.changed?.(created);
      }
      const body = { question, conversation_id: this.currentId };
      const ids = this.hooks.scope();
      if (ids.length > 0) body.document_ids = ids;
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
        if (err.code === "conversation_not_found") this.#setConversation(null); // start anew
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
    if (failed && !turn.text) {
      input.value = input.value || question; // let the person retry without retyping
      this.#fit();
    }
    if (this.conversation) this.hooks.changed?.(this.conversation, { answered: true });
  }

  /** The server's sentence, but with a file name where it can only name a document's id. */
  #sentence(err) {
    if (err.code === "conversation_not_found") {
      return "This conversation was deleted. Ask again to start a new one.";
    }
    const id = err.body?.document_id;
    const name = err.code === "document_not_ready" && id ? this.hooks.nameOf(id) : null;
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
