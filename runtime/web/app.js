// The aira web page: sign-up, sign-in, consent and profile, conversations and chat.
// Plain ES module, no framework, no build step. Model output is rendered by render.js
// (DOM nodes and textContent only). Every state-changing call carries the CSRF token
// from the `__Host-aira_csrf` cookie in the X-CSRF-Token header (see runtime/README.md).

import { renderMarkdown, renderText, statusLabel } from './render.js';

const $ = (selector) => document.querySelector(selector);

const VIEWS = ['signin', 'signup', 'profile', 'chat'];
const TERMINAL = new Set(['answered', 'failed']);
/** Event streams open at once; further pending messages are polled. */
const MAX_STREAMS = 3;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const state = {
  me: null,
  conversation: null,
  /** The conversation's title (null: none yet). */
  title: null,
  /** message id → EventSource */
  streams: new Map(),
  /** message id → <li> */
  items: new Map(),
  /** message id → polling timer, when the stream could not be used */
  polls: new Map(),
  rateTimer: null,
  /** The send not yet acknowledged: {conversation, content, key}. Sending the same text to the
   * same conversation again reuses its Idempotency-Key, so a retry after a lost response is
   * answered from the first request instead of posting the message twice. */
  unacknowledged: null,
};

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function cookie(name) {
  for (const part of document.cookie.split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) {
      return v.join('=');
    }
  }
  return '';
}

/** Random key for Idempotency-Key (works outside secure contexts too). */
function randomKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function api(method, path, body, extraHeaders = {}) {
  const headers = { Accept: 'application/json', ...extraHeaders };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
  }
  if (method !== 'GET') {
    const token = cookie('__Host-aira_csrf');
    if (token) {
      headers['X-CSRF-Token'] = token;
    }
  }
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check your connection and try again.');
  }
  let data = null;
  if (res.status !== 204) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const retryAfter = Number(res.headers.get('Retry-After')) || (data && data.retry_after) || 0;
    throw new ApiError(res.status, (data && data.error) || `http_${res.status}`, (data && data.message) || res.statusText, retryAfter);
  }
  return data;
}

// ---- screens and navigation -------------------------------------------------------

function show(view) {
  $('#loading').hidden = true;
  for (const v of VIEWS) {
    $(`#view-${v}`).hidden = v !== view;
  }
  document.body.dataset.view = view;
}

function showError(el, message) {
  el.textContent = message;
  el.hidden = !message;
}

function banner(message) {
  showError($('#banner'), message);
}

function navigate(path, replace = false) {
  if (replace) {
    history.replaceState(null, '', path);
  } else {
    history.pushState(null, '', path);
  }
  route();
}

function signedOutNav() {
  state.me = null;
  $('#nav').hidden = true;
  $('#who').textContent = '';
}

async function route() {
  const path = location.pathname;
  if (path === '/signin' || path === '/signup') {
    stopAll();
    signedOutNav();
    show(path.slice(1));
    return;
  }
  let me;
  try {
    me = await api('GET', '/v1/me');
  } catch (e) {
    if (e.status === 401) {
      stopAll();
      signedOutNav();
      history.replaceState(null, '', '/signin');
      show('signin');
      return;
    }
    banner(e.message);
    return;
  }
  state.me = me;
  $('#nav').hidden = false;
  $('#who').textContent = me.display_name || me.email;
  if (me.consent_needed && path !== '/welcome') {
    navigate('/welcome', true);
    return;
  }
  if (path === '/welcome' || path === '/settings') {
    stopAll();
    showProfile(path === '/welcome' && me.consent_needed);
    return;
  }
  const m = path.match(/^\/chat\/([^/]+)$/);
  await showChat(m && UUID.test(m[1]) ? m[1] : null, path === '/chat/new');
}

// ---- sign-up, sign-in, sign-out ---------------------------------------------------

function credentials(form) {
  const data = new FormData(form);
  return { email: String(data.get('email') || ''), password: String(data.get('password') || '') };
}

async function signIn(creds) {
  await api('POST', '/v1/auth/login', creds);
}

$('#signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.currentTarget;
  const error = $('#signin-error');
  showError(error, '');
  form.querySelector('button').disabled = true;
  try {
    await signIn(credentials(form));
    form.reset();
    banner('');
    navigate('/chat');
  } catch (e) {
    showError(error, e.status === 401 ? 'Wrong email or password.' : e.message);
  } finally {
    form.querySelector('button').disabled = false;
  }
});

$('#signup-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.currentTarget;
  const error = $('#signup-error');
  showError(error, '');
  form.querySelector('button').disabled = true;
  try {
    const creds = credentials(form);
    await api('POST', '/v1/auth/signup', creds);
    await signIn(creds);
    form.reset();
    banner('');
    navigate('/welcome');
  } catch (e) {
    showError(error, e.status === 409 ? 'An account with this email exists. Sign in instead.' : e.message);
  } finally {
    form.querySelector('button').disabled = false;
  }
});

$('#signout').addEventListener('click', async () => {
  stopAll();
  try {
    await api('POST', '/v1/auth/logout');
  } catch (e) {
    if (e.status !== 401) {
      banner(`Sign-out failed: ${e.message}`);
      return;
    }
  }
  signedOutNav();
  navigate('/signin');
});

// ---- consent and profile ----------------------------------------------------------

function showProfile(firstTime) {
  const form = $('#profile-form');
  $('#profile-title').textContent = firstTime ? 'Before you start' : 'Settings';
  $('#profile-submit').textContent = firstTime ? 'Continue' : 'Save';
  $('#account-tools').hidden = firstTime;
  form.elements.namedItem('keep_history').checked = Boolean(state.me.keep_history);
  form.elements.namedItem('display_name').value = state.me.display_name || '';
  showError($('#profile-error'), '');
  showError($('#delete-error'), '');
  show('profile');
}

$('#profile-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.currentTarget;
  const error = $('#profile-error');
  const keep = form.elements.namedItem('keep_history').checked;
  try {
    state.me = await api('PUT', '/v1/me', {
      keep_history: keep,
      display_name: form.elements.namedItem('display_name').value,
    });
    navigate('/chat');
  } catch (e) {
    showError(error, e.message);
  }
});

$('#delete-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.currentTarget;
  const error = $('#delete-error');
  try {
    await api('DELETE', '/v1/me', { password: String(new FormData(form).get('password') || '') });
    form.reset();
    signedOutNav();
    history.pushState(null, '', '/signup');
    route();
    banner('Your account and all its data were deleted.');
  } catch (e) {
    showError(error, e.status === 401 ? 'Wrong password.' : e.message);
  }
});

// ---- conversations ----------------------------------------------------------------

function conversationLabel(c) {
  return c.title || new Date(c.created_at).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
}

/** The chat screen's heading and its actions, for conversation `c` (none: a new one). */
function showTitle(c) {
  state.title = c?.title ?? null;
  $('#chat-title').textContent = c ? conversationLabel(c) : 'New conversation';
  $('#chat-actions').hidden = !c;
  $('#rename-form').hidden = true;
  showError($('#title-error'), '');
}

function renderConversations(list) {
  const ul = $('#conversation-list');
  ul.replaceChildren();
  for (const c of list) {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = `/chat/${c.id}`;
    a.dataset.nav = '';
    a.textContent = conversationLabel(c);
    if (c.id === state.conversation) {
      a.setAttribute('aria-current', 'page');
    }
    li.append(a);
    ul.append(li);
  }
}

async function refreshConversations() {
  const { conversations } = await api('GET', '/v1/conversations');
  renderConversations(conversations);
  return conversations;
}

/** The chat screen on conversation `id`; without one, the newest (or an empty one if `fresh`). */
async function showChat(id, fresh = false) {
  stopAll();
  state.conversation = id;
  state.items.clear();
  $('#messages').replaceChildren();
  showError($('#compose-error'), '');
  show('chat');
  showTitle(null);
  try {
    const conversations = await refreshConversations();
    if (!id) {
      if (!fresh && conversations.length > 0) {
        navigate(`/chat/${conversations[0].id}`, true);
        return;
      }
      $('#empty-chat').hidden = false;
      return;
    }
    const conv = await api('GET', `/v1/conversations/${id}`);
    if (state.conversation !== id) {
      return;
    }
    showTitle(conv);
    $('#empty-chat').hidden = conv.messages.length > 0;
    for (const m of conv.messages) {
      renderMessage(m);
      if (!TERMINAL.has(m.status)) {
        follow(m.id);
      }
    }
    scrollToEnd();
  } catch (e) {
    if (e.status === 401) {
      navigate('/signin', true);
      return;
    }
    banner(e.status === 404 ? 'This conversation does not exist.' : e.message);
  }
}

$('#new-conversation').addEventListener('click', () => navigate('/chat/new'));

$('#rename-conversation').addEventListener('click', () => {
  const input = $('#title-input');
  input.value = state.title ?? '';
  $('#rename-form').hidden = false;
  input.focus();
  input.select();
});

function closeRename() {
  $('#rename-form').hidden = true;
  showError($('#title-error'), '');
  $('#rename-conversation').focus();
}

$('#rename-cancel').addEventListener('click', closeRename);
$('#rename-form').addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape') {
    closeRename();
  }
});

$('#rename-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const id = state.conversation;
  try {
    const c = await api('PATCH', `/v1/conversations/${id}`, { title: $('#title-input').value });
    if (state.conversation === id) {
      showTitle(c);
      $('#rename-conversation').focus();
    }
    await refreshConversations();
  } catch (e) {
    showError($('#title-error'), e.message);
  }
});

$('#delete-conversation').addEventListener('click', async () => {
  const id = state.conversation;
  if (!id || !window.confirm(`Delete “${$('#chat-title').textContent}” and all its messages?`)) {
    return;
  }
  try {
    await api('DELETE', `/v1/conversations/${id}`);
    navigate('/chat/new', true);
  } catch (e) {
    showError($('#title-error'), e.message);
  }
});

// ---- messages ---------------------------------------------------------------------

function scrollToEnd() {
  const list = $('#messages');
  list.lastElementChild?.scrollIntoView({ block: 'end' });
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) {
    el.className = className;
  }
  if (text !== undefined) {
    el.textContent = text;
  }
  return el;
}

/** Draws the answer text of `li` (its `answerText`) as Markdown: deltas once per animation frame
 * however many pieces arrive, a status (`now`) with its label. The answer's nodes are replaced in
 * one step, so an answer being written (an open list, an unclosed code fence) grows without
 * flicker. */
function drawAnswer(li, now = false) {
  const draw = () => {
    li.drawing = 0;
    li.querySelector('.answer').replaceChildren(renderMarkdown(li.answerText));
  };
  if (now) {
    // A status (the answer whole, or as far as it was written): drawn with its label, at once.
    cancelAnimationFrame(li.drawing);
    draw();
  } else if (!li.drawing) {
    li.drawing = requestAnimationFrame(draw);
  }
}

/** The Stop button of a message not answered yet. */
function stopButton(li, show) {
  let button = li.querySelector('.stop');
  if (!show) {
    button?.remove();
    return;
  }
  if (!button) {
    button = element('button', 'stop link', 'Stop');
    button.type = 'button';
    button.setAttribute('aria-label', 'Stop this answer');
    button.addEventListener('click', () => stopAnswer(li, button));
    li.querySelector('.status').after(button);
  }
}

/** Stops the answer being written: the worker ends the model call; what it wrote stays. */
async function stopAnswer(li, button) {
  button.disabled = true;
  try {
    await api('POST', `/v1/messages/${li.dataset.id}/stop`);
    li.dataset.stopping = '1';
    li.querySelector('.status').textContent = statusLabel('stopping');
    // A queued message is answered (stopped) at once; the stream then ends with it.
    catchUp(li.dataset.id);
  } catch (e) {
    if (e.status === 409) {
      catchUp(li.dataset.id); // answered meanwhile
    } else {
      button.disabled = false;
      sendFailed(e);
    }
  }
}

/** Creates or updates the list item of message `m` ({id, content?, status, answer?, error?, stopped?}). */
function renderMessage(m) {
  let li = state.items.get(m.id);
  if (!li) {
    li = element('li', 'message');
    li.dataset.id = m.id;
    const prompt = element('div', 'prompt');
    prompt.append(renderText(m.content));
    li.append(prompt, element('div', 'status'), element('div', 'answer'), element('div', 'failure'));
    li.dataset.content = m.content ?? '';
    state.items.set(m.id, li);
    $('#messages').append(li);
    $('#empty-chat').hidden = true;
  }
  li.dataset.status = m.status;
  const status = li.querySelector('.status');
  const writing = m.status === 'processing' && typeof m.answer === 'string' && m.answer !== '';
  if (TERMINAL.has(m.status)) {
    delete li.dataset.stopping;
  }
  status.textContent = statusLabel(m.stopped ? 'stopped' : li.dataset.stopping ? 'stopping' : writing ? 'writing' : m.status);
  // A status carries the whole answer so far (the partial one while it is written): it
  // replaces what the page shows; deltas then add to it.
  if (m.status === 'answered' || m.status === 'processing') {
    li.answerText = typeof m.answer === 'string' ? m.answer : '';
    drawAnswer(li, true);
  } else if (m.status === 'queued') {
    li.answerText = '';
    li.querySelector('.answer').replaceChildren();
  }
  li.classList.toggle('writing', m.status === 'processing');
  // A stopped answer keeps its label in sight: it is not the whole answer.
  li.classList.toggle('stopped', m.status === 'answered' && m.stopped === true);
  stopButton(li, m.status === 'queued' || m.status === 'processing');
  markLast();
  const failure = li.querySelector('.failure');
  failure.replaceChildren();
  if (m.status === 'failed') {
    failure.append(element('p', 'error', m.error || 'The model could not answer.'));
    const retry = element('button', 'retry', 'Retry');
    retry.type = 'button';
    retry.addEventListener('click', () => retryMessage(li, retry));
    failure.append(retry);
  }
  return li;
}

function stop(id) {
  const es = state.streams.get(id);
  if (es) {
    es.close();
    state.streams.delete(id);
  }
  clearTimeout(state.polls.get(id));
  state.polls.delete(id);
}

function stopAll() {
  for (const id of [...state.streams.keys(), ...state.polls.keys()]) {
    stop(id);
  }
}

/** Reads the message from the store: after a reconnect, or when streams are unavailable. */
async function catchUp(id) {
  try {
    const m = await api('GET', `/v1/messages/${id}`);
    if (state.items.has(id)) {
      renderMessage(m);
    }
    if (TERMINAL.has(m.status)) {
      stop(id);
    }
    return m;
  } catch (e) {
    if (e.status === 401) {
      stopAll();
      navigate('/signin', true);
    } else if (e.status === 404) {
      // Gone: delivered and deleted (history not kept), or the account was deleted.
      stop(id);
    }
    return null;
  }
}

function pollUntilDone(id) {
  const tick = async () => {
    const m = await catchUp(id);
    if (!m || !TERMINAL.has(m.status)) {
      state.polls.set(id, setTimeout(tick, 2000));
    }
  };
  state.polls.set(id, setTimeout(tick, 1000));
}

/**
 * Follows a message's status over SSE. EventSource reconnects by itself after a network
 * error; the server then starts with the stored status, and meanwhile the page reads the
 * message once from the store, so an answer stored during the outage shows at once.
 */
function follow(id) {
  if (state.streams.has(id) || state.polls.has(id)) {
    return;
  }
  if (state.streams.size >= MAX_STREAMS) {
    // Browsers allow about six HTTP/1.1 connections per host: leave room for the API calls.
    pollUntilDone(id);
    return;
  }
  const es = new EventSource(`/v1/messages/${id}/events`);
  state.streams.set(id, es);
  let lost = false;
  const onEvent = (ev) => {
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return;
    }
    lost = false;
    renderMessage(data);
    if (TERMINAL.has(data.status)) {
      stop(id);
      if (data.status === 'answered') {
        scrollToEnd();
      }
    }
  };
  for (const name of ['queued', 'processing', 'answered', 'failed']) {
    es.addEventListener(name, onEvent);
  }
  // The answer as it is written: each delta is the text that follows what the page has. After
  // a dropped connection EventSource sends the last event's id, and the server sends only what
  // was missed.
  es.addEventListener('delta', (ev) => {
    const li = state.items.get(id);
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!li || typeof data.text !== 'string') {
      return;
    }
    lost = false;
    li.answerText = (li.answerText ?? '') + data.text;
    li.querySelector('.status').textContent = statusLabel(li.dataset.stopping ? 'stopping' : 'writing');
    drawAnswer(li);
  });
  es.addEventListener('error', () => {
    if (!state.streams.has(id)) {
      return;
    }
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. an error status): fall back to polling the store.
      state.streams.delete(id);
      pollUntilDone(id);
      return;
    }
    const li = state.items.get(id);
    if (li && !lost && !TERMINAL.has(li.dataset.status)) {
      lost = true;
      li.querySelector('.status').textContent = statusLabel('reconnecting');
    }
    catchUp(id);
  });
}

async function send(content) {
  const error = $('#compose-error');
  showError(error, '');
  if (!state.conversation) {
    const c = await api('POST', '/v1/conversations');
    state.conversation = c.id;
    history.replaceState(null, '', `/chat/${c.id}`);
    refreshConversations().catch(() => {});
  }
  const pending = state.unacknowledged;
  const key = pending && pending.conversation === state.conversation && pending.content === content ? pending.key : randomKey();
  state.unacknowledged = { conversation: state.conversation, content, key };
  const accepted = await api('POST', `/v1/conversations/${state.conversation}/messages`, { content }, { 'Idempotency-Key': key });
  state.unacknowledged = null;
  if (state.items.has(accepted.id)) {
    return; // a replay of a message already shown
  }
  renderMessage({ id: accepted.id, content, status: accepted.status });
  scrollToEnd();
  follow(accepted.id);
  if (!state.title && state.items.size === 1) {
    // Its first message names the conversation (for a user who keeps history).
    const id = state.conversation;
    const conversations = await refreshConversations().catch(() => []);
    const c = conversations.find((x) => x.id === id);
    if (c && state.conversation === id) {
      showTitle(c);
    }
  }
}

// Waits out a refusal with Retry-After: `why` and a countdown, the send button disabled.
function rateLimited(seconds, why) {
  const error = $('#compose-error');
  const button = $('#send');
  clearInterval(state.rateTimer);
  let left = Math.max(1, Math.ceil(seconds));
  const tick = () => {
    if (left <= 0) {
      clearInterval(state.rateTimer);
      button.disabled = false;
      showError(error, '');
      return;
    }
    showError(error, `${why} Try again in ${left} s.`);
    left -= 1;
  };
  button.disabled = true;
  tick();
  state.rateTimer = setInterval(tick, 1000);
}

function sendFailed(e) {
  if (e.status === 429) {
    rateLimited(e.retryAfter || 1, 'You are sending messages too fast.');
  } else if (e.status === 503 && e.code === 'busy') {
    rateLimited(e.retryAfter || 2, 'Many messages are waiting to be answered.');
  } else if (e.status === 401) {
    navigate('/signin', true);
  } else {
    showError($('#compose-error'), e.message);
  }
}

$('#compose').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const prompt = $('#prompt');
  const content = prompt.value;
  if (content.trim() === '') {
    return;
  }
  const button = $('#send');
  button.disabled = true;
  try {
    await send(content);
    prompt.value = '';
    button.disabled = false;
  } catch (e) {
    button.disabled = false;
    sendFailed(e);
  }
});

$('#prompt').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    $('#compose').requestSubmit();
  }
});

/** The Regenerate button: on the conversation's last message, once it is answered. */
function markLast() {
  for (const b of document.querySelectorAll('#messages .regenerate')) {
    b.remove();
  }
  const last = $('#messages').lastElementChild;
  if (last && last.dataset.status === 'answered') {
    const button = element('button', 'regenerate link', 'Regenerate');
    button.type = 'button';
    button.addEventListener('click', () => regenerate(last, button));
    last.append(button);
  }
}

/** Another answer to the last message, replacing the one shown. */
async function regenerate(li, button) {
  button.disabled = true;
  try {
    const accepted = await api('POST', `/v1/messages/${li.dataset.id}/regenerate`);
    li.querySelector('.answer').replaceChildren();
    renderMessage({ id: accepted.id, status: accepted.status });
    follow(accepted.id);
  } catch (e) {
    button.disabled = false;
    sendFailed(e);
  }
}

/** Asks again for a failed message: the same message goes back to the queue (answered once). */
async function retryMessage(li, button) {
  button.disabled = true;
  try {
    const accepted = await api('POST', `/v1/messages/${li.dataset.id}/retry`);
    renderMessage({ id: accepted.id, status: accepted.status });
    follow(accepted.id);
  } catch (e) {
    button.disabled = false;
    sendFailed(e);
  }
}

// ---- start ------------------------------------------------------------------------

document.addEventListener('click', (ev) => {
  const a = ev.target instanceof Element ? ev.target.closest('a[data-nav]') : null;
  if (a && !ev.ctrlKey && !ev.metaKey && !ev.shiftKey && ev.button === 0) {
    ev.preventDefault();
    banner('');
    navigate(a.getAttribute('href'));
  }
});
window.addEventListener('popstate', route);
route();
