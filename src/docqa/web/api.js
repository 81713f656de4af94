// Talking to the public docqa API: errors as ApiError, the API key, uploads with progress, SSE.
// Every URL is relative, so the page also works behind a gateway that serves it under a prefix.

import { readEvents } from "./sse.js";

const KEY_STORAGE = "docqa.apiKey";

/** An HTTP error in the API's shape: a sentence for people (`detail`) and a stable `code`. */
export class ApiError extends Error {
  constructor(status, detail, code, body = null) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.code = code;
    this.body = body;
  }
}

const FALLBACK = {
  0: "Could not reach the docqa server. Check the connection and try again.",
  401: "This server needs an API key.",
  403: "This API key is not allowed to do that.",
  404: "It is not there (any more).",
  409: "The document is not ready yet.",
  413: "File too large for this server.",
  415: "This type of file is not supported.",
  429: "Too many requests; wait a moment and try again.",
  502: "The model server returned an error.",
  503: "The model server is unavailable.",
  504: "The server took too long to answer.",
};

function fallbackSentence(status) {
  return FALLBACK[status] ?? `The server answered with an error (HTTP ${status}).`;
}

/** Build an ApiError from a status and a response text that is usually the JSON error body. */
function errorFromText(status, text) {
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    // A gateway's HTML error page, or nothing at all: fall back to a sentence of our own.
  }
  const detail =
    body && typeof body.detail === "string" && body.detail ? body.detail : fallbackSentence(status);
  const code = body && typeof body.code === "string" ? body.code : `http_${status}`;
  return new ApiError(status, detail, code, body);
}

// ---- the API key -------------------------------------------------------------------------

export function getKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    // Storage disabled: the key still cannot be kept, and the next 401 asks again.
  }
}

let promptForKey = async () => null;
let pendingPrompt = null;

/** Register the function that asks the person for a key: `async (reason) => key or null`. */
export function onKeyNeeded(fn) {
  promptForKey = fn;
}

/**
 * After a 401 for a request sent with `usedKey`: true when there is a (new) key to retry with.
 * Requests that fail together share one prompt.
 */
async function keyForRetry(usedKey) {
  if (getKey() !== usedKey) return true; // someone entered a new key meanwhile
  if (!pendingPrompt) {
    const reason = usedKey ? "rejected" : "required";
    pendingPrompt = Promise.resolve(promptForKey(reason)).finally(() => {
      pendingPrompt = null;
    });
  }
  const key = await pendingPrompt;
  if (!key) return false;
  setKey(key);
  return true;
}

function authHeaders(extra, key) {
  const headers = new Headers(extra);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return headers;
}

// ---- requests ----------------------------------------------------------------------------

/** fetch() with the key; resolves to an ok Response or throws ApiError (or an AbortError). */
export async function request(path, init = {}) {
  for (;;) {
    const key = getKey();
    let response;
    try {
      response = await fetch(path, { ...init, headers: authHeaders(init.headers, key) });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(0, fallbackSentence(0), "network_error");
    }
    if (response.status === 401 && (await keyForRetry(key))) continue;
    if (!response.ok) throw errorFromText(response.status, await response.text().catch(() => ""));
    return response;
  }
}

export async function getJSON(path, init) {
  return (await request(path, init)).json();
}

/**
 * Yield the server-sent events of a request as `{event, data}`.
 * Errors before the stream starts are thrown as ApiError, like any other request.
 */
export async function* streamEvents(path, init = {}) {
  const headers = new Headers(init.headers);
  headers.set("Accept", "text/event-stream");
  const response = await request(path, { cache: "no-store", ...init, headers });
  yield* readEvents(response.body);
}

export const paths = {
  upload: "api/v1/upload",
  formats: "api/v1/formats",
  ask: "api/v1/ask",
  documents: (params) => `api/v1/documents?${new URLSearchParams(params)}`,
  document: (id) => `api/v1/documents/${encodeURIComponent(id)}`,
  events: (id) => `api/v1/documents/${encodeURIComponent(id)}/events`,
  file: (id, page) =>
    `api/v1/documents/${encodeURIComponent(id)}/file${page ? `#page=${Number(page)}` : ""}`,
  page: (id, n) => `api/v1/documents/${encodeURIComponent(id)}/pages/${Number(n)}`,
  // `version` (the page text's `image_version`) lets the browser keep the image for good.
  pageImage: (id, n, width, version) =>
    `api/v1/documents/${encodeURIComponent(id)}/pages/${Number(n)}/image?width=${Number(width)}` +
    (version ? `&v=${encodeURIComponent(version)}` : ""),
  conversations: (params) =>
    `api/v1/conversations${params ? `?${new URLSearchParams(params)}` : ""}`,
  conversation: (id) => `api/v1/conversations/${encodeURIComponent(id)}`,
};

/** Send JSON and read JSON back (null for a 204). */
export async function sendJSON(path, method, body, init = {}) {
  const response = await request(path, {
    ...init,
    method,
    headers: { "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return response.status === 204 ? null : response.json();
}

/**
 * An image from the API as a data: URL, fetched with the key (an <img> cannot send one; the
 * page's policy allows images from data: URLs, not blob: ones). The browser's HTTP cache still
 * serves repeats: page images are sent with long cache lifetimes.
 */
export async function imageData(path, init = {}) {
  const blob = await (await request(path, init)).blob();
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new ApiError(0, "The page image could not be read.", "bad_image"));
    reader.readAsDataURL(blob);
  });
}

const UPLOAD_RETRIES_429 = 10;

/**
 * Upload one file with XMLHttpRequest, whose upload progress events fetch() still lacks.
 * `onProgress(sentBytes, totalBytes)` reports the request body going out; `onWait(seconds)`
 * a rate limit (429) that the upload waits out before it tries again.
 * Resolves to the upload response; rejects with ApiError, or with an AbortError on `signal`.
 */
export function upload(file, { onProgress, onWait, signal } = {}) {
  let limited = 0;
  return new Promise((resolve, reject) => {
    signal?.addEventListener("abort", () => reject(new DOMException("The upload was cancelled.", "AbortError")), { once: true });
    const send = () => {
      if (signal?.aborted) return;
      const key = getKey();
      const xhr = new XMLHttpRequest();
      xhr.open("POST", paths.upload);
      if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
      xhr.upload.onprogress = (e) => onProgress?.(e.loaded, e.lengthComputable ? e.total : file.size);
      xhr.onload = async () => {
        if (xhr.status === 401 && (await keyForRetry(key))) {
          send();
          return;
        }
        if (xhr.status === 429 && limited < UPLOAD_RETRIES_429) {
          // A batch of files can outrun the per-key upload limit: wait as told, then go on.
          limited += 1;
          const seconds = Math.min(120, Math.max(1, Number(xhr.getResponseHeader("Retry-After")) || 5));
          onWait?.(seconds);
          setTimeout(send, seconds * 1000);
          return;
        }
        if (xhr.status >= 200 && xhr.status < 300) {
          try {
            resolve(JSON.parse(xhr.responseText));
          } catch {
            reject(new ApiError(xhr.status, "The server's answer could not be read.", "bad_response"));
          }
          return;
        }
        reject(errorFromText(xhr.status, xhr.responseText));
      };
      xhr.onerror = () =>
        reject(
          new ApiError(0, "The upload failed: the connection to the server was lost.", "network_error"),
        );
      signal?.addEventListener("abort", () => xhr.abort(), { once: true });
      const form = new FormData();
      form.append("file", file, file.name);
      xhr.send(form);
    };
    send();
  });
}

/**
 * Open a document's file at a page in a new tab. Without a key a plain link does it (the
 * anchor's own href); with one, the bytes are fetched with the key and shown from a blob URL,
 * since a new tab cannot send an Authorization header.
 */
export async function openWithKey(documentId, page, filename) {
  const tab = window.open("", "_blank");
  try {
    const response = await request(paths.file(documentId));
    const type = response.headers.get("content-type") || "";
    const bytes = await response.blob();
    // PDFs open in the viewer, text shows as text; HTML must never run as this page, and Word
    // files have no viewer, so anything else is saved instead.
    let shown = null;
    if (type.startsWith("application/pdf")) shown = "application/pdf";
    else if (type.startsWith("text/")) shown = "text/plain;charset=utf-8";
    const url = URL.createObjectURL(new Blob([bytes], { type: shown || "application/octet-stream" }));
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    if (!shown) {
      tab?.close();
      const link = Object.assign(document.createElement("a"), { href: url, download: filename });
      link.click();
      return;
    }
    const target = page && shown === "application/pdf" ? `${url}#page=${Number(page)}` : url;
    if (tab) tab.location.href = target;
    else window.location.assign(target);
  } catch (err) {
    tab?.close();
    throw err;
  }
}
