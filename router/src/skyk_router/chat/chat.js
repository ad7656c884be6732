// skyk chat: a chat page for the OpenAI-compatible API on this page's own origin
// (the router at /-/chat, or server.py relaying /v1/* to a service endpoint).
// Conversations, settings and the API key live in this browser's localStorage.
"use strict";

const SETTINGS_KEY = "skyk-chat.settings";
const API_KEY_KEY = "skyk-chat.api-key";
const CHATS_KEY = "skyk-chat.chats";
// conversations kept across reloads, newest first
const KEPT_CHATS = 50;
const $ = (id) => document.getElementById(id);

const chats = [];      // {title, messages: [{role, content, state, meta, el}]}
let current = null;    // the chat on screen
let streaming = null;  // {controller} while a reply streams

// ---- settings ----------------------------------------------------------------

const fields = {
  model: $("model"),
  system: $("system-prompt"),
  temperature: $("temperature"),
  top_p: $("top-p"),
  max_tokens: $("max-tokens"),
};

function loadSettings() {
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(SETTINGS_KEY) || "{}");
  } catch {
    // A corrupt entry is ignored; the defaults in the page apply.
  }
  for (const [name, field] of Object.entries(fields)) {
    if (name !== "model" && saved[name] !== undefined) field.value = saved[name];
  }
  fields.model.dataset.wanted = saved.model || "";
  $("api-key").value = localStorage.getItem(API_KEY_KEY) || "";
  showSliderValues();
}

function saveSettings() {
  const values = {};
  for (const [name, field] of Object.entries(fields)) values[name] = field.value;
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(values));
}

// ---- conversations across reloads --------------------------------------------

function loadChats() {
  let saved = [];
  try {
    saved = JSON.parse(localStorage.getItem(CHATS_KEY) || "[]");
  } catch {
    // A corrupt entry is dropped: the page starts with a new chat.
  }
  if (!Array.isArray(saved)) return;
  for (const chat of saved) {
    if (!chat || typeof chat.title !== "string" || !Array.isArray(chat.messages)) continue;
    const messages = chat.messages
        .filter((m) => m && typeof m.content === "string" && ["user", "assistant"].includes(m.role))
        // A reply cut short by the reload is kept as stopped, and its question with it.
        .map((m) => ({role: m.role, content: m.content, meta: m.meta || "",
                      state: ["done", "failed", "error", "stopped"].includes(m.state) ? m.state
                          : (m.role === "assistant" ? "stopped" : "failed")}));
    chats.push({title: chat.title, messages});
  }
}

function saveChats() {
  const kept = chats.filter((chat) => chat.messages.length).slice(0, KEPT_CHATS).map((chat) => ({
    title: chat.title,
    messages: chat.messages.map(({role, content, state, meta}) => ({role, content, state, meta})),
  }));
  try {
    localStorage.setItem(CHATS_KEY, JSON.stringify(kept));
  } catch {
    // Storage full or disabled: the conversations still live in this page.
  }
}

function showSliderValues() {
  $("temperature-value").textContent = Number(fields.temperature.value).toFixed(2);
  $("top-p-value").textContent = Number(fields.top_p.value).toFixed(2);
}

// ---- talking to the API -----------------------------------------------------

function headers() {
  const result = {"Content-Type": "application/json"};
  const key = $("api-key").value.trim();
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

// What to tell the user when a status comes without a hint of its own.
const STATUS_HINTS = {
  401: "The service requires an API key: enter it in the sidebar.",
  403: "The API key was refused: check it in the sidebar.",
  404: "Check the model: the service may not serve it.",
  502: "The page's server could not reach the service endpoint.",
  503: "No replica is ready yet: check 'skyk serve status'.",
};

class ApiError extends Error {
  constructor(title, hint) {
    super(title);
    this.hint = hint || "";
  }
}

// The router and OpenAI-style servers answer {"error": {"message": "..."}}
// (the router adds a "hint" there); others {"error": "..."}; anything else is
// shown as text.
async function apiError(response) {
  const text = await response.text();
  let message = text.trim().slice(0, 500);
  let hint = "";
  try {
    const body = JSON.parse(text);
    const error = body.error ?? body.detail ?? body.message;
    if (typeof error === "string") message = error;
    else if (error && typeof error.message === "string") message = error.message;
    if (error && typeof error.hint === "string") hint = error.hint;
    else if (typeof body.hint === "string") hint = body.hint;
  } catch {
    // not JSON: keep the text
  }
  const title = `${response.status} ${response.statusText || ""}`.trim();
  return new ApiError(message ? `${title}: ${message}` : title,
                      hint || STATUS_HINTS[response.status]);
}

function networkError(error) {
  return new ApiError(`Could not reach ${location.host}: ${error.message}`,
                      "Is the endpoint up? The page calls the API on its own origin.");
}

// Lists the models; returns null, or the error it showed.
async function loadModels() {
  const select = fields.model;
  const wanted = select.value || select.dataset.wanted;
  let error = null;
  try {
    const response = await fetch("/v1/models", {headers: headers()});
    if (!response.ok) {
      error = await apiError(response);
    } else {
      let ids = [];
      try {
        ids = ((await response.json()).data || []).map((model) => model.id);
      } catch {
        error = new ApiError("The service's model list is not JSON.", "GET /v1/models answered something else.");
      }
      if (!error) {
        select.replaceChildren(...ids.map((id) => new Option(id, id)));
        if (ids.includes(wanted)) select.value = wanted;
        if (!ids.length) {
          error = new ApiError("The service lists no models.", "GET /v1/models returned an empty list.");
        }
      }
    }
  } catch (failure) {
    error = networkError(failure);
  }
  if (error) showError(error);
  else hideError();
  return error;
}

// Yields each event's data from a server-sent event stream, as it arrives.
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value;
    // A network chunk may end mid-line: keep the tail for the next one.
    const lines = buffer.split(/\r?\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line.startsWith("data:")) yield line.slice(5).trim();
    }
  }
  if (buffer.startsWith("data:")) yield buffer.slice(5).trim();
}

function requestBody(chat) {
  const messages = [];
  const system = fields.system.value.trim();
  if (system) messages.push({role: "system", content: system});
  // Turns that failed or are still being written are not part of the conversation.
  for (const message of chat.messages) {
    if (message.state === "done") messages.push({role: message.role, content: message.content});
  }
  const body = {
    model: fields.model.value,
    messages,
    stream: true,
    stream_options: {include_usage: true},
    temperature: Number(fields.temperature.value),
    top_p: Number(fields.top_p.value),
  };
  const maxTokens = parseInt(fields.max_tokens.value, 10);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  return body;
}

async function send(text) {
  hideError();
  const chat = current;
  const body = requestBody(chat);
  const question = {role: "user", content: text, state: "pending"};
  chat.messages.push(question);
  if (chat.title === "New chat") chat.title = text.split("\n")[0].slice(0, 60);
  body.messages.push({role: "user", content: text});
  const reply = {role: "assistant", content: "", state: "streaming", meta: body.model};
  chat.messages.push(reply);
  renderChatList();
  renderMessages();

  const controller = new AbortController();
  streaming = {controller};
  setBusy(true);
  const started = performance.now();
  let finishReason = null;
  let usage = null;
  let pieces = 0;
  try {
    let response;
    try {
      response = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
      });
    } catch (error) {
      throw error.name === "AbortError" ? error : networkError(error);
    }
    if (!response.ok) throw await apiError(response);
    for await (const data of sseData(response.body)) {
      if (data === "[DONE]") break;
      const event = JSON.parse(data);
      if (event.error) {  // engines report mid-stream failures as an event
        throw new ApiError(`The model failed: ${event.error.message || JSON.stringify(event.error)}`);
      }
      if (event.usage) usage = event.usage;
      const choice = (event.choices || [])[0];
      if (!choice) continue;
      const piece = choice.delta?.content;
      if (piece) {
        reply.content += piece;
        pieces += 1;
        updateContent(reply);
      }
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
    question.state = reply.state = "done";
    const seconds = (performance.now() - started) / 1000;
    const tokens = usage?.completion_tokens ?? pieces;
    reply.meta = [body.model, `${tokens} tokens`, `${seconds.toFixed(1)} s`,
                  `${(tokens / seconds).toFixed(1)} tokens/s`,
                  finishReason === "length" ? "cut at max tokens" : null]
        .filter(Boolean).join(" · ");
  } catch (error) {
    question.state = "failed";
    if (error.name === "AbortError") {
      reply.state = "stopped";
      reply.meta = "stopped";
    } else {
      reply.state = "error";
      if (!reply.content) reply.content = error.message;
      reply.meta = "failed; this turn is left out of the conversation";
      showError(error instanceof ApiError ? error : new ApiError(error.message));
    }
  } finally {
    streaming = null;
    setBusy(false);
    saveChats();
    if (chat === current) renderMessages();
  }
}

// ---- rendering --------------------------------------------------------------

function renderChatList() {
  $("chat-list").replaceChildren(...chats.map((chat) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = chat.title;
    button.title = chat.title;
    button.setAttribute("aria-current", String(chat === current));
    button.addEventListener("click", () => {
      current = chat;
      renderChatList();
      renderMessages();
    });
    return button;
  }));
}

function renderMessages() {
  const box = $("messages");
  if (!current.messages.length) {
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.textContent = "Ask anything. Replies stream in as the model writes them.";
    box.replaceChildren(empty);
    return;
  }
  box.replaceChildren(...current.messages.map((message) => {
    const el = document.createElement("div");
    el.className = `message ${message.role}`;
    el.dataset.state = message.state;
    const content = document.createElement("div");
    content.className = "content";
    // textContent, never innerHTML: replies are untrusted text.
    content.textContent = message.content;
    el.append(content);
    if (message.meta && message.role === "assistant") {
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.textContent = message.meta;
      el.append(meta);
    }
    message.el = el;
    return el;
  }));
  box.scrollTop = box.scrollHeight;
}

// Only the streaming reply's text changes, so only it is touched.
function updateContent(message) {
  if (!message.el || !message.el.isConnected) return;
  message.el.querySelector(".content").textContent = message.content;
  const box = $("messages");
  if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
}

function setBusy(busy) {
  const button = $("send");
  button.textContent = busy ? "Stop" : "Send";
  button.classList.toggle("primary", !busy);
}

function showError(error) {
  $("error-title").textContent = error.message;
  $("error-hint").textContent = error.hint || "";
  $("error").hidden = false;
}

function hideError() {
  $("error").hidden = true;
}

function newChat() {
  current = {title: "New chat", messages: []};
  chats.unshift(current);
  renderChatList();
  renderMessages();
  $("prompt").focus();
}

// ---- wiring -----------------------------------------------------------------

// The button sends, or stops the reply that is streaming.
async function submit() {
  if (streaming) {
    streaming.controller.abort();
    return;
  }
  const prompt = $("prompt");
  const text = prompt.value.trim();
  if (!text) return;
  if (!fields.model.value) {
    const error = await loadModels();
    if (error || !fields.model.value) {
      // Said as a failed send, so pressing Send again never looks like nothing happened.
      const why = error || new ApiError("The service lists no models.");
      showError(new ApiError(`Not sent: ${why.message}`, why.hint || "Your text stays here to send later."));
      return;
    }
  }
  prompt.value = "";
  growPrompt();
  send(text);
}

function growPrompt() {
  const prompt = $("prompt");
  prompt.style.height = "auto";
  prompt.style.height = `${prompt.scrollHeight}px`;
}

function start() {
  loadSettings();
  $("endpoint").textContent = `API: ${location.origin}/v1`;
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      // Enter only sends: typing the next message must not stop the reply.
      if (!streaming) submit();
    }
  });
  $("prompt").addEventListener("input", growPrompt);
  // Enter in a settings field must not submit (and reload) the page.
  $("settings").addEventListener("submit", (event) => event.preventDefault());
  $("new-chat").addEventListener("click", newChat);
  $("reload-models").addEventListener("click", loadModels);
  $("error-close").addEventListener("click", hideError);
  for (const field of Object.values(fields)) field.addEventListener("change", saveSettings);
  for (const slider of [fields.temperature, fields.top_p]) {
    slider.addEventListener("input", showSliderValues);
  }
  $("api-key").addEventListener("change", () => {
    localStorage.setItem(API_KEY_KEY, $("api-key").value.trim());
    loadModels();  // a key may be what listing the models was missing
  });
  loadChats();
  if (chats.length) {
    current = chats[0];
    renderChatList();
    renderMessages();
  } else {
    newChat();
  }
  loadModels();
}

start();
