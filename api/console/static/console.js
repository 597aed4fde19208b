// cdp console: small enhancements over pages that work without script.
// 1. Live events refresh their table body every 3 s (pausable). 2. The segment builder previews as you type.
"use strict";
(function () {
  function csrf() {
    var field = document.querySelector('input[name="csrf_token"]');
    return field ? field.value : "";
  }

  var rows = document.getElementById("event-rows");
  if (rows && rows.dataset.live) {
    var paused = false;
    var toggle = document.getElementById("live-toggle");
    if (toggle) {
      toggle.addEventListener("click", function () {
        paused = !paused;
        toggle.textContent = paused ? "Resume" : "Pause";
        toggle.setAttribute("aria-pressed", paused ? "false" : "true");
      });
    }
    setInterval(function () {
      if (paused || document.hidden) return;
      fetch(rows.dataset.live, { headers: { "X-Console-Fragment": "1" }, credentials: "same-origin" })
        .then(function (r) { if (r.status === 401) { location.reload(); } return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null && html !== undefined) rows.innerHTML = html; })
        .catch(function () {});
    }, 3000);
  }

  var definition = document.getElementById("definition");
  var preview = document.getElementById("preview");
  if (definition && preview) {
    var timer = null;
    var seq = 0;
    var inflight = null;
    definition.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        var mine = ++seq;
        if (inflight) inflight.abort();  // only the newest text matters
        inflight = new AbortController();
        preview.setAttribute("aria-busy", "true");
        var body = new URLSearchParams({ definition: definition.value, csrf_token: csrf() });
        fetch("/console/segments/preview", {
          method: "POST",
          headers: { "X-Console-Fragment": "1", "X-CSRF-Token": csrf() },
          credentials: "same-origin",
          body: body,
          signal: inflight.signal,
        })
          .then(function (r) { return r.text(); })
          .then(function (html) {
            if (mine === seq) { preview.innerHTML = html; preview.removeAttribute("aria-busy"); }
          })
          .catch(function () {});
      }, 400);
    });
  }
})();
