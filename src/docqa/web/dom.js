// Building DOM nodes. Text from the server (file names, model output, passages) only ever
// becomes text nodes here: nothing on this page parses markup from strings.

/**
 * Create an element: `h("a", {class: "cite", href}, "[1]")`.
 * Props named on* become listeners; strings among the children become text nodes.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (name === "innerHTML" || name === "outerHTML") throw new Error("markup from strings is not allowed");
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  el.append(...nodes(children));
  return el;
}

function nodes(children) {
  return children.flat(Infinity).filter((c) => c != null && c !== false).map((c) =>
    c instanceof Node ? c : document.createTextNode(String(c)),
  );
}

/** Replace an element's children with the given nodes or strings. */
export function setChildren(el, ...children) {
  el.replaceChildren(...nodes(children));
}

export function formatBytes(n) {
  if (!Number.isFinite(n)) return "";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/**
 * A long name cut in the middle, so that both its start and its end (often a date, a number
 * or the extension) stay readable: "Annual report 2…inal v3.pdf".
 */
export function middleCut(name, max = 34) {
  const chars = [...String(name ?? "")];
  if (chars.length <= max) return chars.join("");
  const tail = Math.floor((max - 1) * 0.45);
  return `${chars.slice(0, max - 1 - tail).join("").trimEnd()}…${chars.slice(-tail).join("").trimStart()}`;
}

/** Whitespace folded to single spaces: how passages and quotes are compared. */
export function fold(text) {
  return String(text ?? "").split(/\s+/).filter(Boolean).join(" ");
}

/**
 * Where `needle` sits in `text`, allowing any run of whitespace between its words:
 * `[start, end]`, or null.
 */
export function locate(text, needle) {
  const words = fold(needle).split(" ").filter(Boolean);
  if (words.length === 0) return null;
  const pattern = new RegExp(words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("\\s+"));
  const match = pattern.exec(text);
  return match ? [match.index, match.index + match[0].length] : null;
}
