// Live progress on the jobs page: polls /console/jobs/live (JSON) and
// updates each running job's bar and figures in place. Everything else on
// the console works without JavaScript.
(function () {
  var rows = document.querySelectorAll("[data-live-job]");
  if (!rows.length) return;
  function tick() {
    fetch("/console/jobs/live", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (jobs) {
        if (!jobs) return;
        var byId = {};
        jobs.forEach(function (j) { byId[j.id] = j; });
        rows.forEach(function (row) {
          var j = byId[row.getAttribute("data-live-job")];
          if (!j) { row.querySelector("[data-state]").textContent = "finished: reload"; return; }
          row.querySelector("[data-state]").textContent = j.state + " · " + j.stage;
          row.querySelector("[data-bar]").value = j.percent;
          row.querySelector("[data-figures]").textContent = j.figures;
        });
      })
      .catch(function () {});
  }
  setInterval(tick, 1000);
})();
