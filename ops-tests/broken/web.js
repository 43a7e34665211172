// Broken on purpose: renderAnswer is not defined anywhere.
export function show(message) {
  renderAnswer(message);
}
