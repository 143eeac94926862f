// Inferno's chat page: streams answers from the server's own OpenAI-compatible API.
// Model text only ever reaches the page through text nodes (see `renderMarkdown`).
'use strict';

const STORE = { conversations: 'inferno.conversations', current: 'inferno.current',
  settings: 'inferno.settings', key: 'inferno.apiKey' };
const DEFAULTS = { model: '', system: 'You are a helpful assistant.', temperature: 0.7,
  max_tokens: 512, top_p: 0.95 };

const $ = (id) => document.getElementById(id);
const ui = {
  transcript: $('transcript'), notice: $('notice'), composer: $('composer'), prompt: $('prompt'),
  send: $('send'), stop: $('stop'), model: $('model'), system: $('system'),
  temperature: $('temperature'), maxTokens: $('max-tokens'), topP: $('top-p'),
  keyBox: $('key-box'), apiKey: $('api-key'), list: $('conversations'), newChat: $('new-chat'),
  menu: $('menu-toggle'), sidebar: $('sidebar'), serverState: $('server-state'),
};

function load(key, fallback) {
  try {
    const value = JSON.parse(localStorage.getItem(key));
    return value === null ? fallback : value;
  } catch {
    return fallback;
  }
}

function save(key, value) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch (err) {
    showNotice(`Could not save to this browser's storage: ${err.message}`);
  }
}

const state = {
  conversations: load(STORE.conversations, []),
  current: load(STORE.current, null),
  settings: Object.assign({}, DEFAULTS, load(STORE.settings, {})),
  apiKey: load(STORE.key, ''),
  running: null, // { conversation, message, controller }
};

// ---- Markdown: a small, safe subset rendered as DOM nodes ----

const INLINE = new RegExp([
  '`([^`\\n]+)`', // 1: inline code
  '\\*\\*(?=\\S)(.+?)\\*\\*', // 2: bold
  '(?<!\\w)__(?=\\S)(.+?)__(?!\\w)', // 3: bold
  '\\*(?=[^\\s*])([^*]+?)\\*', // 4: italic
  '(?<!\\w)_(?=[^\\s_])([^_]+?)_(?!\\w)', // 5: italic
  '\\[([^\\]\\n]+)\\]\\(([^)\\s]+)\\)', // 6, 7: link
  '(https?:\\/\\/[^\\s<>()]*[^\\s<>().,;:!?\'"])', // 8: bare URL
].join('|'), 'g');

function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
  } catch {
    return null;
  }
}

function link(href, label) {
  const a = document.createElement('a');
  a.href = href;
  a.rel = 'noopener noreferrer';
  a.target = '_blank';
  a.textContent = label;
  return a;
}

function appendInline(parent, text) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    parent.append(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1] !== undefined) {
      const code = document.createElement('code');
      code.textContent = m[1];
      parent.append(code);
    } else if (m[2] !== undefined || m[3] !== undefined) {
      const strong = document.createElement('strong');
      appendInline(strong, m[2] ?? m[3]);
      parent.append(strong);
    } else if (m[4] !== undefined || m[5] !== undefined) {
      const em = document.createElement('em');
      appendInline(em, m[4] ?? m[5]);
      parent.append(em);
    } else if (m[6] !== undefined) {
      const href = safeUrl(m[7]);
      parent.append(href ? link(href, m[6]) : m[0]);
    } else {
      const href = safeUrl(m[8]);
      parent.append(href ? link(href, m[8]) : m[8]);
    }
  }
  parent.append(text.slice(last));
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(text);
  }
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'visually-hidden';
  document.body.append(area);
  area.select();
  const ok = document.execCommand('copy');
  area.remove();
  if (!ok) throw new Error('copy refused');
}

function codeBlock(lang, text) {
  const wrap = document.createElement('div');
  wrap.className = 'code';
  const head = document.createElement('div');
  head.className = 'code-head';
  const name = document.createElement('span');
  name.textContent = lang || 'code';
  const button = document.createElement('button');
  button.type = 'button';
  button.textContent = 'Copy';
  button.setAttribute('aria-label', `Copy ${lang || ''} code`.replace('  ', ' '));
  button.addEventListener('click', () => {
    copyText(text).then(() => { button.textContent = 'Copied'; },
      () => { button.textContent = 'Copy failed'; });
    setTimeout(() => { button.textContent = 'Copy'; }, 1500);
  });
  head.append(name, button);
  const pre = document.createElement('pre');
  const code = document.createElement('code');
  code.textContent = text;
  pre.append(code);
  wrap.append(head, pre);
  return wrap;
}

const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)/;
const ITEM = /^\s*(?:([-*+])|(\d{1,9})[.)])\s+(.*)$/;
const HEADING = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/;

// Renders `source` into a fragment of <p>, <ul>/<ol>/<li>, code blocks, <code>, <strong>,
// <em>, <a href="http(s)">, <br>. Text is inserted with text nodes, never parsed as HTML.
function renderMarkdown(source) {
  const out = document.createDocumentFragment();
  const lines = source.replace(/\r\n?/g, '\n').split('\n');
  let para = null;
  let list = null;
  const close = () => { para = null; list = null; };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      const body = [];
      for (i++; i < lines.length && !lines[i].trimStart().startsWith(fence[1]); i++) {
        body.push(lines[i]);
      }
      out.append(codeBlock(fence[2], body.join('\n')));
      close();
      continue;
    }
    if (!line.trim()) {
      close();
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      close();
      const p = document.createElement('p');
      const strong = document.createElement('strong');
      appendInline(strong, heading[1]);
      p.append(strong);
      out.append(p);
      continue;
    }
    const item = ITEM.exec(line);
    if (item) {
      const tag = item[1] ? 'UL' : 'OL';
      if (!list || list.tagName !== tag) {
        list = document.createElement(tag);
        if (item[2] && item[2] !== '1') list.start = Number(item[2]);
        out.append(list);
      }
      para = null;
      const li = document.createElement('li');
      appendInline(li, item[3]);
      list.append(li);
      continue;
    }
    if (list && /^\s+\S/.test(line)) { // continuation of the last list item
      const li = list.lastElementChild;
      li.append(document.createElement('br'));
      appendInline(li, line.trim());
      continue;
    }
    list = null;
    if (para) {
      para.append(document.createElement('br'));
    } else {
      para = document.createElement('p');
      out.append(para);
    }
    appendInline(para, line);
  }
  return out;
}

// ---- Conversations ----

function currentConversation() {
  return state.conversations.find((c) => c.id === state.current) || null;
}

function persist() {
  save(STORE.conversations, state.conversations);
  save(STORE.current, state.current);
}

function newConversation() {
  const conversation = { id: `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`,
    title: 'New chat', created: Date.now(), messages: [] };
  state.conversations.unshift(conversation);
  state.current = conversation.id;
  return conversation;
}

function renderList() {
  ui.list.replaceChildren();
  for (const conversation of state.conversations) {
    const li = document.createElement('li');
    const open = document.createElement('button');
    open.type = 'button';
    open.className = 'open';
    open.textContent = conversation.title;
    if (conversation.id === state.current) open.setAttribute('aria-current', 'true');
    open.addEventListener('click', () => {
      state.current = conversation.id;
      persist();
      renderAll();
      setMenu(false);
      ui.prompt.focus();
    });
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.className = 'delete';
    remove.textContent = '×';
    remove.setAttribute('aria-label', `Delete conversation: ${conversation.title}`);
    remove.addEventListener('click', () => deleteConversation(conversation));
    li.append(open, remove);
    ui.list.append(li);
  }
}

function deleteConversation(conversation) {
  if (!confirm(`Delete “${conversation.title}”?`)) return;
  if (state.running && state.running.conversation === conversation) state.running.controller.abort();
  state.conversations = state.conversations.filter((c) => c !== conversation);
  if (state.current === conversation.id) state.current = state.conversations[0]?.id ?? null;
  persist();
  renderAll();
  ui.newChat.focus(); // the focused delete button is gone
}

function formatStats(stats) {
  const parts = [];
  if (stats.ttft_ms != null) parts.push(`first token ${(stats.ttft_ms / 1000).toFixed(2)} s`);
  if (stats.tokens_per_s != null) parts.push(`${stats.tokens_per_s.toFixed(1)} tokens/s`);
  if (stats.tokens != null) parts.push(`${stats.tokens} tokens`);
  if (stats.finish) parts.push(stats.finish);
  return parts.join(' · ');
}

function fillMessage(el, message) {
  const content = el.querySelector('.content');
  if (message.role === 'assistant') {
    content.replaceChildren(renderMarkdown(message.content));
  } else {
    content.textContent = message.content;
  }
  el.dataset.state = message.state || 'done';
  const meta = el.querySelector('.meta');
  meta.textContent = message.stats ? formatStats(message.stats) : '';
  const error = el.querySelector('.error');
  error.textContent = message.error || '';
  error.hidden = !message.error;
}

function messageElement(message) {
  const el = document.createElement('article');
  el.className = `msg ${message.role}`;
  const who = document.createElement('h3');
  who.className = 'who';
  who.textContent = message.role === 'user' ? 'You' : 'Assistant';
  const content = document.createElement('div');
  content.className = 'content';
  const error = document.createElement('p');
  error.className = 'error';
  const meta = document.createElement('p');
  meta.className = 'meta';
  el.append(who, content, error, meta);
  fillMessage(el, message);
  return el;
}

let liveElement = null; // element of the streaming message, when it is on screen

function renderTranscript() {
  const conversation = currentConversation();
  ui.transcript.replaceChildren();
  liveElement = null;
  if (!conversation || !conversation.messages.length) {
    const empty = document.createElement('p');
    empty.className = 'empty';
    empty.textContent = 'Ask anything to start a conversation.';
    ui.transcript.append(empty);
    return;
  }
  for (const message of conversation.messages) {
    const el = messageElement(message);
    if (state.running && state.running.message === message) liveElement = el;
    ui.transcript.append(el);
  }
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function renderAll() {
  renderList();
  renderTranscript();
  const busy = Boolean(state.running);
  ui.send.disabled = busy;
  ui.stop.disabled = !busy;
  ui.transcript.setAttribute('aria-busy', String(busy));
}

// ---- Server API ----

function headers(extra) {
  const h = Object.assign({}, extra);
  if (state.apiKey) h.Authorization = `Bearer ${state.apiKey}`;
  return h;
}

// A readable sentence for a failed response, including Retry-After when the server sent one.
async function describeFailure(response) {
  let message = response.statusText || 'request failed';
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch { /* not JSON: keep the status text */ }
  let text = `Error ${response.status}: ${message}`;
  const retry = response.headers.get('Retry-After');
  if (retry) text += ` (retry after ${retry} s)`;
  if (response.status === 401) {
    text += ' Enter an API key in Settings.';
    requireKey();
  }
  return text;
}

function requireKey() {
  ui.keyBox.hidden = false;
  setMenu(true);
  if (!state.apiKey) ui.apiKey.focus();
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

async function loadModels() {
  let response;
  try {
    response = await fetch('v1/models', { headers: headers() });
  } catch (err) {
    ui.serverState.textContent = 'offline';
    showNotice(`Cannot reach the server: ${err.message}`);
    return;
  }
  if (!response.ok) {
    ui.serverState.textContent = '';
    showNotice(await describeFailure(response));
    return;
  }
  const { data } = await response.json();
  const ids = data.map((m) => m.id);
  ui.model.replaceChildren(...ids.map((id) => new Option(id, id)));
  if (ids.includes(state.settings.model)) ui.model.value = state.settings.model;
  state.settings.model = ui.model.value;
  ui.serverState.textContent = ids.length ? 'connected' : 'no models';
  showNotice('');
}

function requestMessages(conversation) {
  const messages = [];
  const system = state.settings.system.trim();
  if (system) messages.push({ role: 'system', content: system });
  conversation.messages.forEach((m, i) => {
    const failed = m.role === 'user' ? conversation.messages[i + 1]?.error : m.error;
    if (m.content && !failed) messages.push({ role: m.role, content: m.content });
  });
  return messages;
}

function numberSetting(name) {
  const value = state.settings[name];
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

// Yields the JSON payload of each `data:` event of a server-sent event stream.
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error('the connection closed before the answer was complete');
    buffer += value;
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop();
    for (const event of events) {
      const data = event.split(/\r?\n/).filter((l) => l.startsWith('data:'))
        .map((l) => l.slice(l[5] === ' ' ? 6 : 5)).join('\n');
      if (data === '[DONE]') return;
      if (data) yield JSON.parse(data);
    }
  }
}

let paintQueued = false;
function paintLive() {
  if (paintQueued) return;
  paintQueued = true;
  requestAnimationFrame(() => {
    paintQueued = false;
    if (!liveElement || !state.running) return;
    const stick = ui.transcript.scrollHeight - ui.transcript.scrollTop - ui.transcript.clientHeight < 80;
    fillMessage(liveElement, state.running.message);
    if (stick) ui.transcript.scrollTop = ui.transcript.scrollHeight;
  });
}

async function send(text) {
  const conversation = currentConversation() || newConversation();
  if (!conversation.messages.length) conversation.title = text.replace(/\s+/g, ' ').slice(0, 48);
  conversation.messages.push({ role: 'user', content: text });
  const body = {
    model: state.settings.model || undefined,
    messages: requestMessages(conversation),
    stream: true,
    stream_options: { include_usage: true },
    temperature: numberSetting('temperature'),
    max_tokens: numberSetting('max_tokens'),
    top_p: numberSetting('top_p'),
  };
  const message = { role: 'assistant', content: '', state: 'streaming' };
  conversation.messages.push(message);
  const controller = new AbortController();
  state.running = { conversation, message, controller };
  persist();
  renderAll();
  showNotice('');

  const started = performance.now();
  let first = null;
  let last = null;
  let chunks = 0;
  let usage = null;
  let finish = null;
  try {
    const response = await fetch('v1/chat/completions', {
      method: 'POST', headers: headers({ 'Content-Type': 'application/json' }),
      body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) throw new Error(await describeFailure(response));
    for await (const event of sseEvents(response.body)) {
      if (event.error) throw new Error(`Error: ${event.error.message}`);
      if (event.usage) usage = event.usage;
      const choice = event.choices && event.choices[0];
      if (!choice) continue;
      if (choice.finish_reason) finish = choice.finish_reason;
      const piece = choice.delta && choice.delta.content;
      if (piece) {
        last = performance.now();
        if (first === null) first = last;
        chunks++;
        message.content += piece;
        paintLive();
      }
    }
    message.state = 'done';
  } catch (err) {
    if (controller.signal.aborted) {
      message.state = 'stopped';
      finish = 'stopped';
    } else {
      message.state = 'error';
      message.error = err.message.startsWith('Error') ? err.message : `Error: ${err.message}`;
    }
  }
  const tokens = usage ? usage.completion_tokens : chunks;
  message.stats = {
    ttft_ms: first === null ? null : Math.round(first - started),
    tokens_per_s: first !== null && last > first && tokens > 1 ? (tokens - 1) / ((last - first) / 1000) : null,
    tokens: first === null ? null : tokens,
    finish: finish === 'length' ? 'max tokens reached' : finish === 'stopped' ? 'stopped' : null,
  };
  state.running = null;
  persist();
  renderAll();
}

// ---- Wiring ----

function setMenu(open) {
  ui.menu.setAttribute('aria-expanded', String(open));
  ui.sidebar.classList.toggle('open', open);
}

function readSettings() {
  const num = (input) => (input.value === '' ? null : Number(input.value));
  state.settings = {
    model: ui.model.value, system: ui.system.value, temperature: num(ui.temperature),
    max_tokens: num(ui.maxTokens), top_p: num(ui.topP),
  };
  save(STORE.settings, state.settings);
}

function init() {
  ui.system.value = state.settings.system;
  ui.temperature.value = state.settings.temperature ?? '';
  ui.maxTokens.value = state.settings.max_tokens ?? '';
  ui.topP.value = state.settings.top_p ?? '';
  ui.apiKey.value = state.apiKey;
  ui.keyBox.hidden = !state.apiKey;
  for (const input of [ui.model, ui.system, ui.temperature, ui.maxTokens, ui.topP]) {
    input.addEventListener('change', readSettings);
  }
  ui.apiKey.addEventListener('change', () => {
    state.apiKey = ui.apiKey.value.trim();
    save(STORE.key, state.apiKey);
    loadModels();
  });
  ui.composer.addEventListener('submit', (event) => {
    event.preventDefault();
    const text = ui.prompt.value.trim();
    if (!text || state.running) return;
    readSettings();
    ui.prompt.value = '';
    send(text);
  });
  ui.prompt.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.stop.addEventListener('click', () => state.running && state.running.controller.abort());
  ui.newChat.addEventListener('click', () => {
    const conversation = currentConversation();
    if (!conversation || conversation.messages.length) newConversation(); // reuse an empty one
    persist();
    renderAll();
    setMenu(false);
    ui.prompt.focus();
  });
  ui.menu.addEventListener('click', () => setMenu(ui.menu.getAttribute('aria-expanded') !== 'true'));
  for (const conversation of state.conversations) { // answers cut off by a reload or a closed tab
    for (const m of conversation.messages) if (m.state === 'streaming') m.state = 'stopped';
  }
  // Keep a partial answer when the tab closes mid-stream; otherwise storage is already current.
  window.addEventListener('pagehide', () => { if (state.running) persist(); });
  window.addEventListener('storage', (event) => { // another tab changed the conversations
    if (state.running || (event.key !== STORE.conversations && event.key !== null)) return;
    state.conversations = load(STORE.conversations, []);
    if (!currentConversation()) state.current = state.conversations[0]?.id ?? null;
    renderAll();
  });
  if (!currentConversation()) state.current = state.conversations[0]?.id ?? null;
  renderAll();
  loadModels();
  ui.prompt.focus();
}

init();
