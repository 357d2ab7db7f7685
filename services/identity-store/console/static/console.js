// scimflow console: progressive enhancement only. Every page works without this file; it adds copy
// buttons for the SCIM URL and secret (the buttons stay hidden without JavaScript).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button.copy[data-copy]").forEach(function (btn) {
    var src = document.getElementById(btn.getAttribute("data-copy"));
    if (!src || !navigator.clipboard) {
      return;
    }
    btn.hidden = false;
    btn.addEventListener("click", function () {
      navigator.clipboard.writeText(src.textContent.trim()).then(function () {
        btn.textContent = "Copied";
        btn.setAttribute("aria-live", "polite");
      }, function () {
        btn.textContent = "Copy failed: select the text";
      });
    });
  });
});
