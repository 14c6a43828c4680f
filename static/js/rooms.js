/**
 * The room list on /chat/: each room's count follows joins and leaves live,
 * from the `count` events of the directory socket.
 */

import { connect } from "./socket.js";

const list = document.getElementById("chat-rooms");

const socket = connect({ path: list.dataset.socketUrl });

socket.onMessage("count", ({ room, count }) => {
  for (const item of list.querySelectorAll("li[data-room]")) {
    if (item.dataset.room !== room) continue;
    const badge = item.querySelector(".count");
    badge.dataset.count = String(count);
    badge.textContent = `${count} here`;
  }
});
