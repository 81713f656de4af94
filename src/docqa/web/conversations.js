// The list of conversations: open one, rename it, delete it. The list is read from the API,
// the most recently used first.

import { getJSON, paths, sendJSON } from "./api.js";
import { h, plural } from "./dom.js";

const PAGE_SIZE = 30;

function when(iso) {
  const date = new Date(iso);
  const minutes = Math.round((Date.now() - date.getTime()) / 60000);
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  if (minutes < 24 * 60) return `${Math.round(minutes / 60)} h ago`;
  return date.toLocaleDateString(undefined, { day: "numeric", month: "short", year: "numeric" });
}

export class ConversationList {
  /**
   * @param {object} els  toggle, panel, list, empty, more, error
   * @param {object} hooks  currentId() => id or null; open(id) => Promise<boolean>;
   *   confirm(title, text) => Promise<boolean>; askTitle(current) => Promise<string | null>;
   *   changed(conversation, {deleted}) after a rename or delete
   */
  constructor(els, hooks) {
    this.els = els;
    this.hooks = hooks;
    this.cursor = null;
    this.items = [];
    els.toggle.addEventListener("click", () => this.toggle());
    els.more.addEventListener("click", () => this.#load(this.cursor));
  }

  get isOpen() {
    return !this.els.panel.hidden;
  }

  toggle(open = !this.isOpen) {
    this.els.panel.hidden = !open;
    this.els.toggle.setAttribute("aria-expanded", String(open));
    if (open) this.refresh();
  }

  /** Read the first page again (after a question, a rename, a delete). */
  async refresh() {
    await this.#load(null);
  }

  async #load(cursor) {
    const { error, more } = this.els;
    try {
      const params = { limit: PAGE_SIZE, ...(cursor ? { cursor } : {}) };
      const page = await getJSON(paths.conversations(params));
      this.items = cursor ? [...this.items, ...page.conversations] : page.conversations;
      this.cursor = page.next_cursor;
      error.hidden = true;
      const current = this.items.find((c) => c.conversation_id === this.hooks.currentId());
      if (current) this.hooks.changed(current, {});
    } catch (err) {
      error.textContent = `The conversations could not be loaded: ${err.detail ?? err.message}`;
      error.hidden = false;
    }
    more.hidden = !this.cursor;
    this.#render();
  }

  #render() {
    const { list, empty } = this.els;
    const current = this.hooks.currentId();
    list.replaceChildren(...this.items.map((c) => this.#row(c, c.conversation_id === current)));
    empty.hidden = this.items.length > 0;
  }

  #row(conversation, isCurrent) {
    const title = conversation.title || "Untitled conversation";
    const open = h("button", { type: "button", class: "conv-open", title },
      h("span", { class: "conv-name" }, title),
      h("span", { class: "conv-meta" },
        `${plural(conversation.turn_count, "question")} · ${when(conversation.updated_at)}`),
    );
    open.addEventListener("click", async () => {
      if (await this.hooks.open(conversation.conversation_id)) {
        this.#render();
        if (window.matchMedia("(max-width: 760px)").matches) this.toggle(false);
      }
    });
    const rename = h("button", {
      type: "button", class: "icon-button", dataset: { kind: "rename" }, "aria-label": `Rename ${title}`,
    }, "Rename");
    rename.addEventListener("click", () => this.#rename(conversation));
    const remove = h("button", { type: "button", class: "icon-button", "aria-label": `Delete ${title}` }, "Delete");
    remove.addEventListener("click", () => this.#delete(conversation));
    return h("li", {
      class: "conv",
      dataset: { id: conversation.conversation_id },
      "aria-current": isCurrent ? "true" : null,
    }, open, h("span", { class: "conv-actions" }, rename, remove));
  }

  async #rename(conversation) {
    const title = await this.hooks.askTitle(conversation.title);
    if (title === null) return;
    let problem = null;
    try {
      const renamed = await sendJSON(paths.conversation(conversation.conversation_id), "PATCH", { title });
      this.hooks.changed(renamed, {});
    } catch (err) {
      problem = `It could not be renamed: ${err.detail ?? err.message}`;
    }
    await this.refresh();
    if (problem) this.#say(problem);
  }

  async #delete(conversation) {
    const title = conversation.title || "this untitled conversation";
    const ok = await this.hooks.confirm(
      "Delete conversation?",
      `“${title}” and its ${plural(conversation.turn_count, "answer")} will be removed. Your documents stay.`,
    );
    if (!ok) return;
    let problem = null;
    try {
      await sendJSON(paths.conversation(conversation.conversation_id), "DELETE");
      this.hooks.changed(conversation, { deleted: true });
    } catch (err) {
      if (err.code === "conversation_not_found") this.hooks.changed(conversation, { deleted: true });
      else problem = `It could not be deleted: ${err.detail ?? err.message}`;
    }
    await this.refresh();
    if (problem) this.#say(problem);
  }

  #say(text) {
    this.els.error.textContent = text;
    this.els.error.hidden = false;
  }
}
