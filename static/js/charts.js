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
        showMore(el, data);
        if (data.empty) {
          showNote(el, "");
          if (el.dataset.drawn) { Plotly.purge(el); delete el.dataset.drawn; }
          el.innerHTML = "";
          var p = document.createElement("p");
          p.className = "chart-empty";
          // Say which chart is empty: with no title drawn, two empty boxes looked the same.
          var label = el.getAttribute("aria-label");
          if (label) {
            var strong = document.createElement("strong");
            strong.textContent = label;
            p.appendChild(strong);
            p.appendChild(document.createElement("br"));
          }
          p.appendChild(document.createTextNode(data.empty));
          el.appendChild(p);
          el.dataset.state = "empty";
          return;
        }
        if (!el.dataset.drawn) { el.innerHTML = ""; }
        showNote(el, data.note || "");
        // Month names and separators in the page's language (the server sends them).
        fitNarrow(el, data.figure.data, data.figure.layout);
        // No toolbar: it covered the titles; drag to zoom, double-click to reset.
        var config = { responsive: true, displaylogo: false, displayModeBar: false };
        if (data.locale) { Plotly.register(data.locale); config.locale = data.locale.name; }
        Plotly.react(el, data.figure.data, data.figure.layout, config);
        el.dataset.drawn = "1";
        el.dataset.state = "drawn";
        el.dataset.points = data.points;
      })
      .catch(function (err) {
        el.dataset.state = "error";
        el.textContent = (el.dataset.errorText || "Error") + " (" + err.message + ")";
      });
  }
  // A paged chart (the heatmap) says whether rows follow: "next" shows only then.
  function showMore(el, data) {
    if (!("more" in data)) { return; }
    var pager = el.nextElementSibling;
    if (!pager || !pager.classList.contains("pagination")) { return; }
    var next = pager.querySelector("a[rel=next]");
    if (next) { next.hidden = !data.more; }
  }
  // "Data only since ...": said above the chart, in a sibling so Plotly never redraws it away.
  function showNote(el, text) {
    var note = el.previousElementSibling;
    if (!note || !note.classList.contains("chart-note")) {
      if (!text) { return; }
      note = document.createElement("p");
      note.className = "chart-note muted small";
      el.parentNode.insertBefore(note, el);
    }
    note.textContent = text;
    note.hidden = !text;
  }
  // On a phone, long node names on a category axis left the heatmap a sliver: keep their
  // distinguishing tail (the full name stays in the hover) and slim the colour bar.
  function fitNarrow(el, data, layout) {
    if (el.clientWidth >= 600) { return; }
    var y = layout.yaxis || {};
    if (y.type === "category" && data[0] && data[0].y) {
      var names = Array.from(data[0].y);
      y.tickmode = "array";
      y.tickvals = names;
      y.ticktext = names.map(function (n) { return n.length > 13 ? "\u2026" + n.slice(-12) : n; });
      y.tickfont = { size: 10 };
      layout.margin = Object.assign({}, layout.margin, { l: 8, r: 8 });
    }
    data.forEach(function (t) {
      if (t.colorbar) { t.colorbar.thickness = 8; t.colorbar.tickfont = { size: 10 }; }
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
