// Copy buttons: <button data-copy-target="ID" hidden> next to a readonly input. Without JS the
// button stays hidden and the input's text can still be selected and copied by hand.
(function () {
  "use strict";

  function reveal(root) {
    root.querySelectorAll("[data-copy-target]").forEach(function (button) {
      button.hidden = false;
    });
  }

  document.addEventListener("DOMContentLoaded", function () { reveal(document); });
  // Content swapped in by htmx (e.g. the panel with a new key) has hidden buttons too.
  document.addEventListener("htmx:load", function (event) { reveal(event.target); });

  document.addEventListener("focusin", function (event) {
    if (event.target.matches && event.target.matches("[data-select-on-focus]")) {
      event.target.select();
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-copy-target]");
    if (!button) return;
    var input = document.getElementById(button.dataset.copyTarget);
    if (!input) return;
    input.select();
    var done = function (ok) {
      button.textContent = ok ? "Copied" : "Press Ctrl+C to copy";
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(
        function () { done(true); },
        function () { done(document.execCommand("copy")); }
      );
    } else {
      done(document.execCommand("copy"));
    }
  });
})();
