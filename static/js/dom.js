/**
 * Text-only DOM helpers. Content always goes in through textContent, so text
 * from the network can never become markup.
 *
 * Also the site's one time format, shared by the demos: `formatTime(value)`
 * gives "14:05" for today, "3 Mar, 14:05" earlier this year, "3 Mar 2024,
 * 14:05" before, in the reader's locale; `timeElement(value)` wraps it in a
 * <time> whose title is the full date and time.
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

const CLOCK = { hour: "2-digit", minute: "2-digit" };

/**
 * A time as the site shows it: the clock today, with the day before today.
 *
 * @param {string|number|Date} value - an ISO 8601 string, a timestamp or a Date.
 * @param {Date} [now] - what "today" is measured against.
 * @returns {string} the text; an unparsable string comes back as it is.
 */
export function formatTime(value, now = new Date()) {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  const clock = date.toLocaleTimeString([], CLOCK);
  if (date.toDateString() === now.toDateString()) return clock;
  const day = { day: "numeric", month: "short" };
  if (date.getFullYear() !== now.getFullYear()) day.year = "numeric";
  return `${date.toLocaleDateString([], day)}, ${clock}`;
}

/**
 * A <time> element showing `formatTime(value)`, the full date and time in its title.
 *
 * @param {string} value - an ISO 8601 date and time, kept in `datetime`.
 * @param {{class?: string}} [options]
 * @returns {HTMLTimeElement}
 */
export function timeElement(value, { class: className } = {}) {
  const date = new Date(value);
  const full = Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
  return el("time", { class: className, text: formatTime(value), attrs: { datetime: value, title: full } });
}
