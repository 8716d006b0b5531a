// The support console's only script, served from the console itself (the
// Content-Security-Policy allows no other). The pages work without it; it
// adds the copy button, the expiry in local time, one submit per form, and
// the polls that move a request for approval along without a reload.
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

  // A request waiting for a supervisor: once granted, post the reveal form
  // (the code is never fetched by script); answered otherwise, reload.
  var wait = document.querySelector("[data-approval-status]");
  if (wait) {
    var every = +wait.getAttribute("data-poll-ms") || 2000;
    var check = function () {
      fetch(wait.getAttribute("data-approval-status"), { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.json(); })
        .then(function (s) {
          if (s.state === "granted" && s.ready) {
            document.getElementById("reveal-form").submit();
          } else if (s.state === "denied" || s.state === "expired") {
            location.reload();
          } else {
            setTimeout(check, every);
          }
        }, function () { setTimeout(check, every * 2); });
    };
    setTimeout(check, every);
  }
  // The supervisors' queue: add new requests, drop answered ones, keep the
  // rows (and what is typed in them) that are still there.
  var queue = document.querySelector("ul[data-queue]");
  if (queue) {
    var qevery = +queue.getAttribute("data-poll-ms") || 2000;
    var refresh = function () {
      fetch(queue.getAttribute("data-queue"), { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { if (!r.ok) throw r.status; return r.text(); })
        .then(function (html) {
          var next = document.createElement("template");
          next.innerHTML = html;
          var ids = {};
          next.content.querySelectorAll("li[data-id]").forEach(function (li) {
            ids[li.getAttribute("data-id")] = true;
            if (!queue.querySelector('li[data-id="' + li.getAttribute("data-id") + '"]')) queue.appendChild(li);
          });
          queue.querySelectorAll("li[data-id]").forEach(function (li) {
            if (!ids[li.getAttribute("data-id")]) li.remove();
          });
          var empty = queue.querySelector("li.empty");
          var any = queue.querySelector("li[data-id]");
          if (any && empty) empty.remove();
          if (!any && !empty) {
            var e = next.content.querySelector("li.empty");
            if (e) queue.appendChild(e);
          }
          setTimeout(refresh, qevery);
        }, function () { setTimeout(refresh, qevery * 2); });
    };
    setTimeout(refresh, qevery);
  }
});
