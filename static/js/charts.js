// Draw every .chart[data-src]: fetch the figure JSON, Plotly.react it, refresh short ranges.
// An empty range is said in words (never drawn as zero).
(function () {
  "use strict";
  function draw(el) {
    fetch(el.dataset.src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error(r.status + " " + r.statusText); }
        return r.json();
      })
      .then(function (data) {
        if (data.loading) {  // query-API mode: a task is reading it; keep what is drawn
          if (!el.dataset.drawn) { el.dataset.state = "loading"; }
          return;
        }
        if (data.empty) {
          if (el.dataset.drawn) { Plotly.purge(el); delete el.dataset.drawn; }
          el.innerHTML = "";
          var p = document.createElement("p");
          p.className = "chart-empty";
          p.textContent = data.empty;
          el.appendChild(p);
          el.dataset.state = "empty";
          return;
        }
        if (!el.dataset.drawn) { el.innerHTML = ""; }
        Plotly.react(el, data.figure.data, data.figure.layout,
          { responsive: true, displaylogo: false });
        el.dataset.drawn = "1";
        el.dataset.state = "drawn";
        el.dataset.points = data.points;
      })
      .catch(function (err) {
        el.dataset.state = "error";
        el.textContent = (el.dataset.errorText || "Error") + " (" + err.message + ")";
      });
  }
  function init(el) {
    if (el.dataset.started) { return; }
    el.dataset.started = "1";
    draw(el);
    var every = parseInt(el.dataset.refresh || "0", 10);
    if (every > 0) { setInterval(function () { draw(el); }, every * 1000); }
  }
  function start() {
    document.querySelectorAll(".chart[data-src]").forEach(init);
    // Charts that htmx swaps in later (the one-GPU page in query-API mode).
    document.body.addEventListener("htmx:load", function (e) {
      var root = e.detail && e.detail.elt;
      if (!root || !root.querySelectorAll) { return; }
      if (root.matches && root.matches(".chart[data-src]")) { init(root); }
      root.querySelectorAll(".chart[data-src]").forEach(init);
    });
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else { start(); }
})();
