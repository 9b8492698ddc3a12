/* The seller's dashboard: small enhancements over pages that work without it.
 * - forms with data-confirm ask before they are sent (the server asks too: a refund
 *   needs its box ticked, an erasure the address typed twice);
 * - a select with data-autosubmit sends its form when changed (the language);
 * - "/" moves to the element with data-shortcut="/" (the orders search);
 * - an element with data-refresh="N" has its page read again every N seconds (the fleet),
 *   only while the tab is visible and focus is not in a form.
 */
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });

  document.addEventListener("change", function (event) {
    var field = event.target;
    if (field.hasAttribute && field.hasAttribute("data-autosubmit") && field.form) {
      field.form.submit();
    }
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    var active = document.activeElement;
    if (active && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) return;
    var target = document.querySelector('[data-shortcut="/"]');
    if (target) {
      event.preventDefault();
      target.focus();
      if (target.select) target.select();
    }
  });

  var refreshing = document.querySelector("[data-refresh]");
  if (refreshing && window.fetch && window.DOMParser) {
    var seconds = Math.max(5, parseInt(refreshing.getAttribute("data-refresh"), 10) || 15);
    window.setInterval(function () {
      var active = document.activeElement;
      if (document.hidden || (active && active.closest && active.closest("form"))) return;
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (answer) { return answer.ok ? answer.text() : null; })
        .then(function (text) {
          if (!text) return;
          var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("main");
          var main = document.getElementById("main");
          if (fresh && main) main.innerHTML = fresh.innerHTML;
        })
        .catch(function () { /* the next tick tries again */ });
    }, seconds * 1000);
  }
})();
