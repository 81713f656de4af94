// The page's entry point: finds the elements, wires the documents panel, the chat, the
// conversations and the page viewer together, and owns the dialogs (confirm a delete, enter
// an API key, rename a conversation).

import { getKey, onKeyNeeded, setKey } from "./api.js";
import { Chat } from "./chat.js";
import { ConversationList } from "./conversations.js";
import { DocumentList } from "./documents.js";
import { showAcceptedTypes } from "./drop.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);

/** Show a <dialog> built in index.html and resolve to the value of the button that closed it. */
function showDialog(dialog) {
  return new Promise((resolve) => {
    dialog.returnValue = "cancel";
    dialog.addEventListener("close", () => resolve(dialog.returnValue), { once: true });
    dialog.showModal();
  });
}

async function confirmDelete(title, text) {
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  return (await showDialog($("confirm-dialog"))) === "ok";
}

/** Ask for a conversation's new title; resolves to it, or null when the person cancels. */
async function askTitle(current) {
  const input = $("rename-input");
  input.value = current ?? "";
  const shown = showDialog($("rename-dialog"));
  input.select();
  return (await shown) === "save" ? input.value.trim() : null;
}

/** Ask for an API key; resolves to the key, or null when the person cancels. */
async function askForKey(reason) {
  const input = $("key-input");
  $("key-reason").textContent =
    reason === "rejected"
      ? "The server did not accept that API key. Enter a valid one."
      : reason === "change"
        ? "The key is kept in this browser only and sent with every request."
        : "This server needs an API key. It is kept in this browser only.";
  input.value = "";
  $("key-forget").hidden = !getKey();
  const choice = await showDialog($("key-dialog"));
  $("key-button").hidden = false;
  if (choice === "forget") {
    setKey("");
    return null;
  }
  const key = input.value.trim();
  return choice === "save" && key ? key : null;
}

function main() {
  onKeyNeeded(askForKey);
  // Enter in the key field means "Save" (implicit submission would press the first button).
  $("key-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      $("key-dialog").close("save");
    }
  });
  const keyButton = $("key-button");
  keyButton.hidden = !getKey();
  keyButton.addEventListener("click", async () => {
    const key = await askForKey("change");
    if (key) {
      setKey(key);
      docs.refresh();
    }
  });

  const docs = new DocumentList(
    {
      list: $("doc-list"),
      empty: $("doc-empty"),
      count: $("doc-count"),
      more: $("more"),
      listError: $("list-error"),
      dropzone: $("dropzone"),
      input: $("file-input"),
    },
    { confirm: confirmDelete, onChange: () => showScope() },
  );

  $("rename-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      $("rename-dialog").close("save");
    }
  });

  const viewer = new Viewer({
    panel: $("viewer"),
    layout: document.querySelector(".layout"),
    title: $("viewer-title"),
    where: $("viewer-where"),
    back: $("viewer-back"),
    close: $("viewer-close"),
    prev: $("viewer-prev"),
    next: $("viewer-next"),
    page: $("viewer-page"),
    zoomOut: $("viewer-zoom-out"),
    zoomIn: $("viewer-zoom-in"),
    zoom: $("viewer-zoom"),
    original: $("viewer-original"),
    note: $("viewer-note"),
    body: $("viewer-body"),
  });

  const chat = new Chat(
    {
      messages: $("messages"),
      intro: $("intro"),
      form: $("ask-form"),
      question: $("question"),
      send: $("send"),
      stop: $("stop"),
      newChat: $("new-chat"),
      title: $("conv-title"),
    },
    {
      scope: () => docs.selected().map((item) => item.id),
      nameOf: (id) => docs.nameOf(id),
      show: (request) => viewer.show(request),
      // The list (and with it the title the first question gave) is read again.
      changed: () => conversations.refresh(),
    },
  );

  const conversations = new ConversationList(
    {
      toggle: $("conv-toggle"),
      panel: $("conv-panel"),
      list: $("conv-list"),
      empty: $("conv-empty"),
      more: $("conv-more"),
      error: $("conv-error"),
    },
    {
      currentId: () => chat.currentId,
      open: async (id) => {
        try {
          const opened = await chat.open(id);
          if (opened) viewer.close();
          return opened;
        } catch (err) {
          $("conv-error").textContent = `That conversation could not be opened: ${err.detail ?? err.message}`;
          $("conv-error").hidden = false;
          return false;
        }
      },
      confirm: confirmDelete,
      askTitle,
      changed: (conversation, how) => chat.changed(conversation, how),
    },
  );

  function showScope() {
    const chosen = docs.selected();
    const text = $("scope-text");
    if (chosen.length === 0) {
      const ready = docs.readyCount();
      text.textContent = ready ? `all ready documents (${ready})` : "all ready documents (none yet)";
    } else {
      const names = chosen.map((item) => item.filename);
      text.textContent = names.length <= 2 ? names.join(", ") : `${names.slice(0, 2).join(", ")} and ${names.length - 2} more`;
    }
    text.title = chosen.map((item) => item.filename).join("\n");
    $("scope-clear").hidden = chosen.length === 0;
  }
  $("scope-clear").addEventListener("click", () => docs.clearSelection());

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") docs.refresh();
  });
  document.addEventListener("keydown", (e) => {
    // Esc closes the page viewer first (its own handler); then it stops a running answer.
    if (e.key === "Escape" && !e.defaultPrevented && chat.running && !document.querySelector("dialog[open]")) {
      chat.stop();
    }
  });

  showAcceptedTypes($("file-input"), $("dropzone-hint"));
  docs.load();
  chat.restore();
}

main();
