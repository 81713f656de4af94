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
