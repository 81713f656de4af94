// One row of the documents list: its elements, and how an item's state is shown on them.

import { formatBytes, h, plural } from "./dom.js";

/** States after which a row no longer changes by itself ("rejected": the upload was refused). */
export const TERMINAL = new Set(["ready", "failed", "rejected"]);

const BADGES = {
  waiting: "Waiting",
  uploading: "Uploading",
  queued: "Queued",
  processing: "Processing",
  ready: "Ready",
  failed: "Failed",
  rejected: "Not uploaded",
};

const STAGES = {
  queued: "Waiting for a worker",
  extracting: "Reading pages",
  chunking: "Splitting into passages",
  embedding: "Indexing passages",
};

function stageText(item) {
  // Only the stage and the percent: done/total count pages in one stage and passages in the
  // next, and change meaning at the switch.
  const label = STAGES[item.stage] ?? (item.stage ? item.stage[0].toUpperCase() + item.stage.slice(1) : "Processing");
  return `${label} · ${Math.floor(item.percent)}%`;
}

/** The elements of a new row; `onToggle(checked)` and `onAction()` report what was clicked. */
export function buildRow(item, { onToggle, onAction }) {
  const check = h("input", { type: "checkbox", class: "pick" });
  check.addEventListener("change", () => onToggle(check.checked));
  const fill = h("div", { class: "progress-fill" });
  const bar = h("div", {
    class: "progress",
    role: "progressbar",
    "aria-valuemin": "0",
    "aria-valuemax": "100",
  }, fill);
  const name = h("div", { class: "doc-name" });
  const badge = h("span", { class: "badge" });
  const meta = h("span", { class: "doc-meta-text" });
  const status = h("div", { class: "doc-status" });
  const error = h("p", { class: "doc-error", role: "alert" });
  const note = h("p", { class: "doc-note" });
  const action = h("button", { type: "button", class: "icon-button row-action" });
  action.addEventListener("click", onAction);
  const li = h("li", { class: "doc" },
    h("label", { class: "pick-wrap" }, check),
    h("div", { class: "doc-body" }, name, h("div", { class: "doc-meta" }, badge, meta), bar, status, error, note),
    action,
  );
  if (item.id) li.dataset.docId = item.id;
  return { li, check, name, badge, meta, bar, fill, status, error, note, action };
}

/** Show `item`'s current state on its row. */
export function renderRow(item) {
  const { li, check, name, badge, meta, bar, fill, status, error, note, action } = item.row;
  li.dataset.status = item.status;
  name.textContent = item.filename;
  name.title = item.filename;
  badge.textContent = BADGES[item.status] ?? item.status;
  badge.dataset.status = item.status;
  const facts = [];
  if (item.pages != null && item.status === "ready") facts.push(plural(item.pages, "page"));
  if (item.size != null) facts.push(formatBytes(item.size));
  meta.textContent = facts.join(" · ");

  const active = !TERMINAL.has(item.status);
  bar.hidden = !active;
  status.hidden = !active;
  let percent = 0;
  if (item.status === "waiting") {
    status.textContent = "Waiting to upload…";
  } else if (item.status === "uploading") {
    const ratio = item.total > 0 ? Math.min(1, item.sent / item.total) : 0;
    percent = ratio * 100;
    status.textContent = `Uploading · ${Math.floor(percent)}% · ${formatBytes(Math.round(ratio * item.size))} of ${formatBytes(item.size)}`;
  } else if (item.status === "queued") {
    status.textContent = "Uploaded · waiting for a worker";
  } else if (item.status === "processing") {
    percent = item.percent;
    status.textContent = stageText(item);
  }
  bar.dataset.phase = item.status === "uploading" || item.status === "waiting" ? "upload" : "process";
  bar.classList.toggle("indeterminate", item.status === "queued");
  bar.setAttribute("aria-valuenow", String(Math.round(percent)));
  bar.setAttribute("aria-label", `${item.filename}: ${status.textContent}`);
  fill.style.width = `${percent}%`;

  error.hidden = !item.error;
  error.textContent = item.error ?? "";
  note.hidden = !item.note;
  note.textContent = item.note ?? "";

  const selectable = Boolean(item.id) && item.status !== "failed";
  check.disabled = !selectable;
  check.checked = selectable && item.selected;
  check.setAttribute("aria-label", `Ask about ${item.filename}`);
  // The cell stays (the grid keeps its columns); only documents can be ticked.
  check.parentElement.classList.toggle("none", !item.id);

  const cancel = !item.id && !TERMINAL.has(item.status);
  const dismiss = !item.id && item.status === "rejected";
  action.textContent = cancel ? "Cancel" : dismiss ? "Dismiss" : "Delete";
  action.dataset.kind = cancel || dismiss ? "dismiss" : "delete";
  action.setAttribute("aria-label", `${action.textContent} ${item.filename}`);
  action.disabled = item.busy;
}
