// Drag and drop onto the upload form. Without JS the plain file input does the same job.
(function () {
  "use strict";

  function setup(form) {
    var input = form.querySelector('input[type="file"]');
    if (!input) return;
    form.querySelectorAll(".js-only").forEach(function (el) { el.hidden = false; });
    var zone = form.querySelector(".dropzone") || form;

    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("dragging");
      });
    });
    ["dragleave", "drop"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.remove("dragging");
      });
    });
    zone.addEventListener("drop", function (event) {
      var files = event.dataTransfer && event.dataTransfer.files;
      if (!files || !files.length) return;
      input.files = files;
      // Dropping a file is the decision: upload it straight away.
      if (form.requestSubmit) form.requestSubmit(); else form.submit();
    });
    input.addEventListener("change", function () {
      if (input.files && input.files.length) zone.classList.add("chosen");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-dropzone]").forEach(setup);
  });
})();
