// The tab title follows the job (or the jobs list) being watched, and a browser notification says
// when a watched job finishes. Permission is asked only when the person clicks the button.
(function () {
  "use strict";
  var ACTIVE = ["queued", "validating", "processing", "paused", "finalizing"];
  var baseTitle = document.title;
  var seen = {}; // job id -> last status seen on this page

  function isActive(status) { return ACTIVE.indexOf(status) !== -1; }

  function canNotify() {
    return "Notification" in window && Notification.permission === "granted";
  }

  function notify(title, body, url) {
    if (!canNotify()) return;
    var note = new Notification(title, { body: body, tag: url });
    note.onclick = function () { window.focus(); if (url) window.location.href = url; };
  }

  function watchJob(id, status, label, name, summary, url) {
    var before = seen[id];
    seen[id] = status;
    if (before && isActive(before) && !isActive(status)) {
      notify(name + ": " + (label || status).toLowerCase(), summary, url);
    }
  }

  function refresh() {
    var progress = document.getElementById("progress");
    if (progress && progress.dataset.job) {
      var d = progress.dataset;
      document.title = isActive(d.status)
        ? d.percent + "% · " + d.statusLabel + " · " + baseTitle
        : d.statusLabel + " · " + baseTitle;
      watchJob(d.job, d.status, d.statusLabel, d.name, d.summary, window.location.href);
      // A job that ended while watched has nothing left to notify of.
      if (!isActive(d.status)) {
        document.querySelectorAll("[data-notify-button]").forEach(function (button) {
          button.hidden = true;
        });
      }
    }
    var rows = document.querySelectorAll("tr[data-job][data-status]");
    if (rows.length) {
      var running = 0;
      rows.forEach(function (row) {
        var d = row.dataset;
        if (isActive(d.status)) running += 1;
        var link = row.querySelector("a");
        watchJob(d.job, d.status, d.statusLabel, d.name, d.summary || "", link ? link.href : "");
      });
      document.title = (running ? running + " active · " : "") + baseTitle;
    }
  }

  function setUpButtons() {
    document.querySelectorAll("[data-notify-button]").forEach(function (button) {
      if (!("Notification" in window) || Notification.permission === "denied") return;
      var progress = document.getElementById("progress");
      if (progress && progress.dataset.status && !isActive(progress.dataset.status)) return;
      var done = function () {
        button.textContent = "Notifications on";
        button.disabled = true;
      };
      button.hidden = false;
      if (Notification.permission === "granted") { done(); return; }
      button.addEventListener("click", function () {
        Notification.requestPermission().then(function (answer) {
          if (answer === "granted") done();
          else button.hidden = true;
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { refresh(); setUpButtons(); });
  document.addEventListener("htmx:afterSettle", refresh);
})();
