// Files in: the picker, drag and drop anywhere on the window, and the list of accepted types.

import { paths } from "./api.js";

// Kinds whose extension is not the name people use for them.
const LABELS = { markdown: "Markdown", text: "plain text" };

/**
 * Set the picker's `accept` list and the drop zone's hint from the formats the server reads
 * (`GET /api/v1/formats`), so the page never lists a type the server refuses or misses one it
 * reads. index.html's own list stays in place if the request fails.
 */
export async function showAcceptedTypes(input, hint) {
  let formats;
  try {
    // Plain fetch, without the API key dance: the list is public, and a failure keeps the
    // built-in list instead of asking for a key.
    const response = await fetch(paths.formats);
    if (!response.ok) return;
    formats = (await response.json()).formats;
  } catch {
    return;
  }
  if (!Array.isArray(formats) || formats.length === 0) return;
  input.accept = formats.flatMap((f) => [...f.extensions, ...f.media_types]).join(",");
  const labels = formats.map((f) => LABELS[f.kind] ?? f.extensions[0].slice(1).toUpperCase());
  const unique = [...new Set(labels)];
  hint.textContent =
    unique.length > 1 ? `${unique.slice(0, -1).join(", ")} or ${unique.at(-1)}` : unique[0];
  hint.title = formats.map((f) => `${f.name}: ${f.extensions.join(" ")}`).join("\n");
}

/** Call `onFiles(files)` with the files a person picks or drops. */
export function installDrop(dropzone, input, onFiles) {
  input.addEventListener("change", () => {
    onFiles([...input.files]);
    input.value = ""; // picking the same file again must fire "change" again
  });
  // The whole window takes the drop: a file that misses the zone must not replace the page.
  let depth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes("Files");
  window.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    depth += 1;
    document.body.classList.add("dragging");
  });
  window.addEventListener("dragleave", (e) => {
    if (!hasFiles(e)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) document.body.classList.remove("dragging");
  });
  window.addEventListener("dragover", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
  });
  window.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    const files = [...e.dataTransfer.files];
    if (files.length > 0) onFiles(files);
  });
  dropzone.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      input.click();
    }
  });
}
