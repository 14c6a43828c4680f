/**
 * Text-only DOM helpers. Content always goes in through textContent, so text
 * from the network can never become markup.
 */

/**
 * Create an element.
 *
 * @param {string} tag - e.g. "li".
 * @param {{text?: string, class?: string, attrs?: Object<string, string>}} [options]
 * @param {Node[]} [children] - appended in order.
 * @returns {HTMLElement}
 */
export function el(tag, { text, class: className, attrs = {} } = {}, children = []) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  for (const [name, value] of Object.entries(attrs)) {
    // Event handler attributes would run text as code.
    if (name.toLowerCase().startsWith("on")) throw new Error(`el(): refusing attribute ${name}`);
    node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}
