"use strict";
// report.html's enhancements: zoom, search and a details line for each flamegraph, and
// sortable tables. The page reads without them.
(function () {
  function percent(fraction) {
    return (fraction * 100).toFixed(4) + "%";
  }

  function nameOf(frame) {
    var title = frame.querySelector("title");
    return title ? title.textContent : "";
  }

  function setUpFlame(flame) {
    var graph = flame.querySelector("svg.graph");
    var total = Number(graph.dataset.total);
    var frames = Array.prototype.slice.call(graph.querySelectorAll("svg.fr"));
    var reset = flame.querySelector("button.reset");
    var search = flame.querySelector("input.search");
    var matched = flame.querySelector(".matched");
    var details = flame.querySelector(".details");

    function zoom(zx, zw, zd) {
      frames.forEach(function (frame) {
        var x = Number(frame.dataset.x);
        var w = Number(frame.dataset.w);
        var d = Number(frame.dataset.d);
        var inside = x >= zx && x + w <= zx + zw && d >= zd;
        var ancestor = d < zd && x <= zx && x + w >= zx + zw;
        frame.classList.toggle("hidden", !inside && !ancestor);
        frame.classList.toggle("ancestor", ancestor);
        if (inside) {
          frame.setAttribute("x", percent((x - zx) / zw));
          frame.setAttribute("width", percent(w / zw));
        } else if (ancestor) {
          frame.setAttribute("x", "0%");
          frame.setAttribute("width", "100%");
        }
      });
      reset.disabled = zd === 0;
    }

    graph.addEventListener("click", function (event) {
      var frame = event.target.closest("svg.fr");
      if (frame) {
        zoom(Number(frame.dataset.x), Number(frame.dataset.w), Number(frame.dataset.d));
      }
    });
    reset.addEventListener("click", function () {
      zoom(0, total, 0);
    });
    graph.addEventListener("mouseover", function (event) {
      var frame = event.target.closest("svg.fr");
      details.textContent = frame ? nameOf(frame) : "\u00a0";
    });
    graph.addEventListener("mouseleave", function () {
      details.textContent = "\u00a0";
    });
    search.addEventListener("input", function () {
      var query = search.value.trim().toLowerCase();
      var spans = [];
      frames.forEach(function (frame) {
        var hit = query !== "" && Number(frame.dataset.d) > 0 &&
          nameOf(frame).toLowerCase().indexOf(query) !== -1;
        frame.classList.toggle("match", hit);
        if (hit) {
          spans.push([Number(frame.dataset.x), Number(frame.dataset.w)]);
        }
      });
      // The share of the graph under a match, each sample counted once.
      spans.sort(function (a, b) { return a[0] - b[0]; });
      var covered = 0;
      var end = 0;
      spans.forEach(function (span) {
        var start = Math.max(span[0], end);
        var stop = span[0] + span[1];
        if (stop > start) {
          covered += stop - start;
          end = stop;
        }
      });
      matched.textContent = query === "" ? "" :
        "Matched: " + (covered * 100 / total).toFixed(1) + "%";
    });
  }

  function setUpSorting(table) {
    var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var body = table.tBodies[0];
    headers.forEach(function (header, column) {
      header.addEventListener("click", function () {
        var ascending = header.getAttribute("aria-sort") !== "ascending";
        headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
        header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var numeric = header.classList.contains("num");
        var key = function (row) {
          var cell = row.cells[column];
          var value = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent;
          return numeric ? Number(value) : value.toLowerCase();
        };
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var ka = key(a);
          var kb = key(b);
          var order = ka < kb ? -1 : ka > kb ? 1 : 0;
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  }

  document.querySelectorAll(".flame").forEach(setUpFlame);
  document.querySelectorAll("table.sortable").forEach(setUpSorting);
  document.body.dataset.ready = "true";
})();
