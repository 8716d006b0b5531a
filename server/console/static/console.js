// The support console's only script, served from the console itself (the
// Content-Security-Policy allows no other). The pages work without it; it
// adds the copy button, the expiry in local time, and one submit per form.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button.copy[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      var status = b.parentNode.querySelector(".copied");
      navigator.clipboard.writeText(b.getAttribute("data-copy")).then(function () {
        if (status) status.textContent = "Copied.";
      }, function () {
        if (status) status.textContent = "Copy failed: select the code and copy it by hand.";
      });
    });
  });
  document.querySelectorAll("time.local[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) t.textContent = d.toLocaleString() + " your time";
  });
  document.querySelectorAll("form.once").forEach(function (f) {
    f.addEventListener("submit", function () {
      f.querySelectorAll("button[type=submit]").forEach(function (b) {
        // Disabled after the submission has started, so the click counts once.
        setTimeout(function () { b.disabled = true; }, 0);
      });
    });
  });
});
