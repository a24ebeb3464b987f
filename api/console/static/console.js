// llmqueue console: the one piece htmx does not do, reading each compare column's job
// events (Server-Sent Events) into the column as they arrive, then its figures.
(function () {
  "use strict";

  function follow(column) {
    if (column.dataset.following) return;
    column.dataset.following = "1";
    const text = column.querySelector(".text");
    const state = column.querySelector(".state");
    const source = new EventSource(column.dataset.events);
    column.classList.add("streaming");
    state.textContent = "streaming…";
    source.addEventListener("delta", function (event) {
      text.textContent += JSON.parse(event.data).text;
    });
    source.addEventListener("reset", function () {
      text.textContent = "";  // the call was retried: its text starts again
    });
    source.addEventListener("done", function (event) {
      const final = JSON.parse(event.data);
      source.close();
      column.classList.remove("streaming");
      column.dataset.done = final.status;
      state.textContent = final.status;
      if (final.result !== null && final.result !== undefined) text.textContent = final.result;
      // its own element as the source: htmx drops a request whose source has one in flight
      const figures = column.querySelector(".figures");
      htmx.ajax("GET", column.dataset.card, { source: figures, target: figures, swap: "innerHTML" });
    });
    source.onopen = function () {
      text.textContent = "";  // every (re)connection replays the job's text from its start
    };
    source.onerror = function () {
      if (!column.dataset.done) state.textContent = "reconnecting…";
    };
  }

  function scan(root) {
    (root || document).querySelectorAll(".answer[data-events]").forEach(follow);
  }

  document.addEventListener("DOMContentLoaded", function () { scan(document); });
  document.addEventListener("htmx:afterSettle", function (event) { scan(event.target); });
})();
