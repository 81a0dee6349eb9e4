// The API client: bearer key from localStorage, fetch with {code, message} errors turned into ApiError.

const KEY_STORAGE = "medsearch.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

export function saveApiKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage disabled: nothing to keep */
  }
}

export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "The request did not reach the service. Is `medsearch serve` running?");
  }
  if (!response.ok) {
    let code = `http_${response.status}`;
    let message = response.statusText || "request failed";
    try {
      const body = await response.json();
      if (body && typeof body.code === "string") {
        code = body.code;
        message = body.message || message;
      }
    } catch {
      /* not JSON: keep the HTTP status */
    }
    throw new ApiError(response.status, code, message);
  }
  return response;
}

export async function apiJson(path, options = {}) {
  return (await api(path, options)).json();
}
