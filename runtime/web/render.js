// Safe rendering of model output. Answers are Markdown: marked's lexer (vendor/marked.esm.js)
// reads them into tokens, and this file builds the DOM from those tokens with createElement and
// textContent only. Nothing the model writes is ever parsed as HTML (no innerHTML, no
// sanitiser to get right): raw HTML in an answer is shown as the text it is, a link is a link
// only to http(s) or mailto, and an image is never loaded (its link and its text are shown).
// Prompts are shown as plain text.
import { Lexer } from './marked.js';

/** Appends `text` to `parent`, turning `inline code` spans into <code> elements. */
function appendInline(parent, text) {
  const parts = text.split('`');
  // An odd number of parts means the backticks pair up.
  const paired = parts.length % 2 === 1;
  parts.forEach((part, i) => {
    if (paired && i % 2 === 1) {
      const code = document.createElement('code');
      code.textContent = part;
      parent.append(code);
    } else {
      parent.append(document.createTextNode(paired || i === 0 ? part : '`' + part));
    }
  });
}

/** A fragment showing `text` (a user's prompt) as paragraphs of plain text. */
export function renderText(text) {
  const frag = document.createDocumentFragment();
  for (const para of String(text ?? '').split(/\n\s*\n/)) {
    if (para.trim() === '') {
      continue;
    }
    const p = document.createElement('p');
    appendInline(p, para.trim());
    frag.append(p);
  }
  return frag;
}

function el(tag, className) {
  const e = document.createElement(tag);
  if (className) {
    e.className = className;
  }
  return e;
}

/** The URL if a link may point there (absolute http, https or mailto), else null. */
export function safeHref(href) {
  let url;
  try {
    url = new URL(String(href ?? ''));
  } catch {
    return null;
  }
  return ['http:', 'https:', 'mailto:'].includes(url.protocol) ? url.href : null;
}

/** Inline tokens into `parent`. */
function inline(parent, tokens) {
  for (const t of tokens ?? []) {
    switch (t.type) {
      case 'strong':
      case 'em':
      case 'del': {
        const e = el(t.type === 'del' ? 's' : t.type);
        inline(e, t.tokens);
        parent.append(e);
        break;
      }
      case 'codespan': {
        const code = el('code');
        code.textContent = t.text;
        parent.append(code);
        break;
      }
      case 'br':
        parent.append(el('br'));
        break;
      case 'link':
      case 'image': {
        const href = safeHref(t.href);
        const label = t.type === 'image' ? document.createTextNode(t.text || t.href) : null;
        if (!href) {
          // Shown as its words: a `javascript:` (or relative) target is no link.
          if (label) {
            parent.append(label);
          } else {
            inline(parent, t.tokens);
          }
          break;
        }
        const a = el('a');
        a.href = href;
        a.rel = 'noopener noreferrer';
        a.target = '_blank';
        if (label) {
          a.append(label);
        } else {
          inline(a, t.tokens);
        }
        parent.append(a);
        break;
      }
      case 'text':
        if (t.tokens) {
          inline(parent, t.tokens);
        } else {
          parent.append(document.createTextNode(t.text));
        }
        break;
      // `escape` (a backslash-escaped character), `html` (shown as the text it is), and anything
      // else marked may add: their text.
      default:
        parent.append(document.createTextNode(t.text ?? t.raw ?? ''));
    }
  }
}

/** A fenced or indented code block, with a button that copies its text. */
function codeBlock(t) {
  const wrap = el('div', 'code-block');
  const copy = el('button', 'copy');
  copy.type = 'button';
  copy.textContent = 'Copy';
  copy.setAttribute('aria-label', t.lang ? `Copy the ${t.lang} code` : 'Copy the code');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(t.text);
      copy.textContent = 'Copied';
    } catch {
      copy.textContent = 'Copy failed';
    }
    setTimeout(() => {
      copy.textContent = 'Copy';
    }, 1500);
  });
  const pre = el('pre');
  const code = el('code');
  if (t.lang) {
    code.dataset.lang = t.lang;
  }
  code.textContent = t.text;
  pre.append(code);
  wrap.append(copy, pre);
  return wrap;
}

/** A table cell's alignment as a class (the CSP allows no inline style). */
function cell(tag, c, align) {
  const e = el(tag, align ? `align-${align}` : undefined);
  inline(e, c.tokens);
  return e;
}

/** Block tokens into `parent`. */
function blocks(parent, tokens) {
  for (const t of tokens ?? []) {
    switch (t.type) {
      case 'space':
      case 'def':
        break;
      case 'code':
        parent.append(codeBlock(t));
        break;
      case 'heading': {
        // Below the page's own h1 and h2, so that the outline stays the page's.
        const h = el(`h${Math.min(6, t.depth + 2)}`);
        inline(h, t.tokens);
        parent.append(h);
        break;
      }
      case 'hr':
        parent.append(el('hr'));
        break;
      case 'blockquote': {
        const q = el('blockquote');
        blocks(q, t.tokens);
        parent.append(q);
        break;
      }
      case 'list': {
        const list = el(t.ordered ? 'ol' : 'ul');
        if (t.ordered && Number(t.start) > 1) {
          list.start = Number(t.start);
        }
        for (const item of t.items) {
          const li = el('li');
          if (item.task) {
            const box = el('input');
            box.type = 'checkbox';
            box.disabled = true;
            box.checked = Boolean(item.checked);
            li.append(box, document.createTextNode(' '));
          }
          blocks(li, item.tokens.filter((x) => x.type !== 'checkbox'));
          list.append(li);
        }
        parent.append(list);
        break;
      }
      case 'table': {
        const table = el('table');
        const head = el('tr');
        t.header.forEach((c, i) => head.append(cell('th', c, t.align[i])));
        const thead = el('thead');
        thead.append(head);
        const tbody = el('tbody');
        for (const row of t.rows) {
          const tr = el('tr');
          row.forEach((c, i) => tr.append(cell('td', c, t.align[i])));
          tbody.append(tr);
        }
        table.append(thead, tbody);
        const scroll = el('div', 'table');
        scroll.append(table);
        parent.append(scroll);
        break;
      }
      case 'paragraph': {
        const p = el('p');
        inline(p, t.tokens);
        parent.append(p);
        break;
      }
      case 'text':
        // A tight list item's text: inline, as in a paragraph.
        inline(parent, [t]);
        break;
      // `html` (shown as the text it is) and anything else: its text, as a paragraph.
      default: {
        const p = el('p');
        p.textContent = t.text ?? t.raw ?? '';
        parent.append(p);
      }
    }
  }
}

/** A fragment showing `text` (model output, Markdown) safely. An unfinished answer renders as
 * far as it goes: a fence still open is a code block to the end. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  let tokens;
  try {
    tokens = Lexer.lex(String(text ?? ''), { gfm: true });
  } catch {
    frag.append(renderText(text));
    return frag;
  }
  blocks(frag, tokens);
  return frag;
}

const STATUS_LABELS = {
  queued: 'Queued',
  processing: 'Thinking…',
  writing: 'Writing…',
  stopping: 'Stopping…',
  answered: 'Answered',
  stopped: 'Stopped',
  failed: 'Failed',
  reconnecting: 'Reconnecting…',
};

export function statusLabel(status) {
  return STATUS_LABELS[status] ?? status;
}
