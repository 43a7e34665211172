// Safe rendering of model output: text only, through DOM nodes and textContent, never
// innerHTML. A tiny markdown subset: fenced code blocks (```), paragraphs separated by
// blank lines, and `inline code`. Everything else shows literally.

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

/** A fragment showing `text` (model output or a user's prompt) safely. */
export function renderText(text) {
  const frag = document.createDocumentFragment();
  const blocks = String(text ?? '').split(/^```[^\n]*$/m);
  blocks.forEach((block, i) => {
    if (i % 2 === 1 && i < blocks.length - 1) {
      const pre = document.createElement('pre');
      const code = document.createElement('code');
      code.textContent = block.replace(/^\n/, '').replace(/\n$/, '');
      pre.append(code);
      frag.append(pre);
      return;
    }
    const prose = i % 2 === 1 ? '```' + block : block;
    for (const para of prose.split(/\n\s*\n/)) {
      if (para.trim() === '') {
        continue;
      }
      const p = document.createElement('p');
      appendInline(p, para.trim());
      frag.append(p);
    }
  });
  return frag;
}

const STATUS_LABELS = {
  queued: 'Queued',
  processing: 'Thinking…',
  answered: 'Answered',
  failed: 'Failed',
  reconnecting: 'Reconnecting…',
};

export function statusLabel(status) {
  return STATUS_LABELS[status] ?? status;
}
