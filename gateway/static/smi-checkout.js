/*
 * Sell My Images: "Buy high-res" buttons and the payment status modal.
 *
 *   <script src="https://gateway.example/static/smi-checkout.js" defer></script>
 *   <img src="/photos/lake.jpg" data-smi-image="https://shop.example/photos/lake.jpg">
 *   <button data-smi-image="https://shop.example/photos/lake.jpg">Buy high-res</button>
 *
 * An <img> with data-smi-image gets a "Buy high-res" button after it (or the
 * shop's own words from its data-smi-label); a button or link with it becomes
 * one. A click asks the gateway for a checkout
 * (POST /api/checkout), shows the price and sizes, and goes to the payment
 * page when the customer confirms. Back on this page, the smi_payment,
 * job_id and session_id parameters open a modal that follows the job
 * (POST /api/jobs/{id}/return once, then GET /api/jobs/{id} polled with
 * backoff) until it is final. They are taken out of the address as soon as
 * the script runs, before the page's own requests can carry them in Referer.
 *
 * The answer to a checkout holds the job's buyer key, the proof that opens its
 * download: the script keeps it in this shop's localStorage (never in an
 * address) and shows it in the X-Buyer-Key header. A buyer whose browser lost
 * it gets the link by email.
 *
 * The gateway is the origin this script was loaded from, or the value of
 * data-smi-gateway on the script tag. Its words come from the gateway's
 * catalogue (/static/i18n/LANG.json) for the page's <html lang>, else the
 * browser's languages, else English; prices are written by Intl in that
 * language. No framework, no build step.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var GATEWAY = (
    (script && script.getAttribute("data-smi-gateway")) ||
    (script && script.src ? new URL(script.src).origin : window.location.origin)
  ).replace(/\/$/, "");
  var FINAL = ["completed", "refunded", "refund_failed", "expired"];
  var POLL_FIRST_MS = 1000;
  var POLL_MAX_MS = 4000;
  var PARAMS = ["smi_payment", "job_id", "session_id"];
  var LANGUAGES = ["en", "fr", "de", "es", "ja"];
  // The page's language (<html lang>), else the first of the browser's we speak.
  var LANGUAGE = pickLanguage(
    [document.documentElement.lang].concat(navigator.languages || [navigator.language])
  );
  var strings = {}; // the catalogue: /static/i18n/LANGUAGE.json from the gateway
  var KEYS = "smi-buyer-keys"; // localStorage: job id -> buyer key
  var KEYS_KEPT = 20;
  // Read and removed before anything else runs: the page's own requests must not
  // carry the payment's parameters in their Referer.
  var RETURNED = takeParams();

  function takeParams() {
    var url = new URL(window.location.href);
    var found = {};
    var any = false;
    PARAMS.forEach(function (name) {
      found[name] = url.searchParams.get(name);
      if (found[name] !== null) any = true;
      url.searchParams.delete(name);
    });
    // A reload does not reopen the modal.
    if (any) window.history.replaceState(window.history.state, "", url.toString());
    return found;
  }

  // The buyer keys of this browser's last checkouts (storage may be off: then none).
  function keys() {
    try {
      var kept = JSON.parse(window.localStorage.getItem(KEYS) || "[]");
      return Array.isArray(kept) ? kept : [];
    } catch (error) {
      return [];
    }
  }

  function rememberKey(jobId, key) {
    if (!jobId || !key) return;
    var kept = keys().filter(function (entry) { return entry && entry[0] !== jobId; });
    kept.push([jobId, key]);
    try {
      window.localStorage.setItem(KEYS, JSON.stringify(kept.slice(-KEYS_KEPT)));
    } catch (error) { /* no storage: the link comes by email */ }
  }

  function keyOf(jobId) {
    var found = keys().filter(function (entry) { return entry && entry[0] === jobId; });
    return found.length ? String(found[0][1]) : null;
  }

  // Headers for the gateway's job answers: the buyer key when this browser holds it.
  function jobHeaders(jobId, extra) {
    var headers = { Accept: "application/json" };
    var key = keyOf(jobId);
    if (key) headers["X-Buyer-Key"] = key;
    Object.keys(extra || {}).forEach(function (name) { headers[name] = extra[name]; });
    return headers;
  }

  function pickLanguage(tags) {
    for (var i = 0; i < tags.length; i++) {
      var base = String(tags[i] || "").toLowerCase().split(/[-_]/)[0];
      if (LANGUAGES.indexOf(base) >= 0) return base;
    }
    return "en";
  }

  // The catalogue's string for key, with {name} placeholders filled from params.
  function t(key, params) {
    var text = strings[key] || key;
    return text.replace(/\{(\w+)\}/g, function (whole, name) {
      return params && name in params ? String(params[name]) : whole;
    });
  }

  function loadStrings() {
    return fetch(GATEWAY + "/static/i18n/" + LANGUAGE + ".json")
      .then(function (response) { return response.json(); })
      .then(function (loaded) { strings = loaded; });
  }

  // -- the modal -------------------------------------------------------------

  var modal = null;
  var lastFocus = null;
  var onClose = null;

  function injectStyles() {
    if (document.getElementById("smi-styles")) return;
    var style = document.createElement("style");
    style.id = "smi-styles";
    style.textContent = [
      ".smi-backdrop{position:fixed;inset:0;background:rgba(0,0,0,.55);display:flex;",
      "align-items:center;justify-content:center;z-index:2147483000;font:16px/1.5 system-ui,sans-serif}",
      ".smi-dialog{background:#fff;color:#1d1d1f;border-radius:10px;max-width:28rem;width:calc(100% - 2rem);",
      "padding:1.5rem;box-shadow:0 10px 40px rgba(0,0,0,.3);position:relative}",
      ".smi-dialog h2{margin:0 0 .75rem;font-size:1.25rem}",
      ".smi-close{position:absolute;top:.5rem;right:.5rem;border:0;background:none;font-size:1.5rem;",
      "line-height:1;cursor:pointer;padding:.25rem .5rem;color:#555}",
      ".smi-actions{margin-top:1.25rem;display:flex;gap:.5rem;flex-wrap:wrap}",
      ".smi-button{display:inline-block;border:0;border-radius:6px;padding:.6rem 1.1rem;font:inherit;",
      "cursor:pointer;text-decoration:none;background:#1a56db;color:#fff}",
      ".smi-button.smi-secondary{background:#e5e7eb;color:#1d1d1f}",
      ".smi-progress{width:100%;height:.6rem;margin-top:.75rem}",
      ".smi-buy{margin:.5rem 0;display:inline-block}",
      ".smi-error{color:#b42318}",
      ".smi-choices{border:0;padding:0;margin:.75rem 0 0}",
      ".smi-choices legend{font-weight:600;padding:0;margin-bottom:.25rem}",
      ".smi-choices label{display:block;padding:.2rem 0;cursor:pointer}",
      ".smi-preview{margin-top:1rem}",
      ".smi-pick{position:relative;display:inline-block;touch-action:none;cursor:crosshair}",
      ".smi-pick img{display:block;max-width:10rem;height:auto}",
      ".smi-square{position:absolute;border:2px solid #1a56db;box-shadow:0 0 0 1px #fff;",
      "box-sizing:border-box}",
      ".smi-pair{display:flex;gap:.5rem;margin-top:.5rem}",
      ".smi-pair figure{margin:0;flex:1;min-width:0}",
      ".smi-pair img{width:100%;height:auto;display:block;background:#eee}",
      ".smi-pair figcaption,.smi-note{font-size:.85rem;color:#555}",
    ].join("");
    document.head.appendChild(style);
  }

  function openModal(title, closeHandler) {
    injectStyles();
    closeModal();
    lastFocus = document.activeElement;
    onClose = closeHandler || null;
    var backdrop = document.createElement("div");
    backdrop.className = "smi-backdrop";
    backdrop.innerHTML =
      '<div class="smi-dialog" role="dialog" aria-modal="true" aria-labelledby="smi-title" ' +
      'aria-describedby="smi-status" tabindex="-1">' +
      '<button type="button" class="smi-close">&times;</button>' +
      '<h2 id="smi-title"></h2>' +
      '<div id="smi-status" role="status" aria-live="polite" aria-atomic="true"></div>' +
      '<div class="smi-actions"></div></div>';
    backdrop.querySelector("#smi-title").textContent = title;
    backdrop.querySelector(".smi-close").setAttribute("aria-label", t("dialog.close_label"));
    backdrop.querySelector(".smi-close").addEventListener("click", closeModal);
    backdrop.addEventListener("click", function (event) {
      if (event.target === backdrop) closeModal();
    });
    backdrop.addEventListener("keydown", trapKeys);
    document.body.appendChild(backdrop);
    modal = backdrop;
    backdrop.querySelector(".smi-dialog").focus();
    return backdrop;
  }

  function trapKeys(event) {
    if (event.key === "Escape") {
      event.preventDefault();
      closeModal();
      return;
    }
    if (event.key !== "Tab" || !modal) return;
    var focusable = modal.querySelectorAll("button, a[href], [tabindex]:not([tabindex='-1'])");
    if (!focusable.length) return;
    var first = focusable[0];
    var last = focusable[focusable.length - 1];
    if (event.shiftKey && document.activeElement === first) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  }

  function closeModal() {
    if (!modal) return;
    modal.remove();
    modal = null;
    var handler = onClose;
    onClose = null;
    if (handler) handler();
    if (lastFocus && lastFocus.focus) lastFocus.focus();
  }

  function setTitle(text) {
    if (modal) modal.querySelector("#smi-title").textContent = text;
  }

  // Replaces the status text (announced by screen readers) and the buttons.
  function show(state, title, message, actions, progress) {
    if (!modal) return;
    setTitle(title);
    if (state !== "quote") {
      var stale = modal.querySelector(".smi-preview");
      if (stale) stale.remove();
    }
    modal.querySelector(".smi-dialog").setAttribute("data-smi-state", state);
    var status = modal.querySelector("#smi-status");
    status.textContent = "";
    var text = document.createElement("p");
    text.className = "smi-message";
    text.textContent = message;
    if (state === "declined" || state === "error") text.classList.add("smi-error");
    status.appendChild(text);
    if (typeof progress === "number") {
      var bar = document.createElement("progress");
      bar.className = "smi-progress";
      bar.max = 100;
      bar.value = Math.round(progress * 100);
      bar.setAttribute("aria-label", t("progress.label"));
      bar.textContent = bar.value + "%";
      status.appendChild(bar);
    }
    var box = modal.querySelector(".smi-actions");
    box.textContent = "";
    (actions || []).forEach(function (action) {
      var element = document.createElement(action.href ? "a" : "button");
      element.className = "smi-button" + (action.secondary ? " smi-secondary" : "");
      element.textContent = action.label;
      if (action.href) {
        element.href = action.href;
        if (action.download) element.setAttribute("download", "");
      } else {
        element.type = "button";
        element.addEventListener("click", action.onClick);
      }
      box.appendChild(element);
    });
  }

  function closeAction(label) {
    return { label: label || t("dialog.close"), secondary: true, onClick: closeModal };
  }

  // -- buying ------------------------------------------------------------------

  // Amounts come in the currency's smallest unit (cents, yen, fils) with the number of
  // digits after the point; Intl writes them as the page's language does.
  function money(amount, currency, exponent) {
    var value = amount / Math.pow(10, exponent);
    try {
      return new Intl.NumberFormat(LANGUAGE, { style: "currency", currency: currency.toUpperCase() })
        .format(value);
    } catch (error) {
      return value.toFixed(exponent) + " " + currency.toUpperCase();
    }
  }

  function returnUrl() {
    var url = new URL(window.location.href);
    PARAMS.forEach(function (name) { url.searchParams.delete(name); });
    url.hash = "";
    return url.toString();
  }

  function errorMessage(response, body) {
    if (response.status === 429) {
      return t("buy.busy", { seconds: response.headers.get("Retry-After") || "60" });
    }
    if (body && body.error && body.error.message) return body.error.message;
    return t("buy.failed", { status: response.status });
  }

  function startCheckout(imageUrl, model) {
    var body = { image_url: imageUrl, return_url: returnUrl(), language: LANGUAGE };
    if (model) body.model = model;
    return fetch(GATEWAY + "/api/checkout", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().catch(function () { return null; }).then(function (answer) {
        if (!response.ok) throw new Error(errorMessage(response, answer));
        rememberKey(answer.job_id, answer.buyer_key);
        return answer;
      });
    });
  }

  function sizesOf(checkout, offer) {
    return t("buy.sizes", {
      width: checkout.width, height: checkout.height,
      output_width: offer.output_width, output_height: offer.output_height,
    });
  }

  function priceOf(checkout, offer) {
    return money(offer.amount_cents, checkout.currency, checkout.currency_exponent);
  }

  // The quote: the price of the chosen model, and the others the shop offers to choose from.
  // The checkout exists for the model the gateway chose first; choosing another starts
  // that one's checkout on "Pay".
  function quote(imageUrl, checkout) {
    var offers = checkout.offers || [];
    var chosen = offers.filter(function (o) { return o.model === checkout.model; })[0];
    function describe() {
      var price = priceOf(checkout, chosen);
      var text = t("buy.offer", { scale: chosen.scale, sizes: sizesOf(checkout, chosen), price: price });
      show("quote", t("buy.title"), text, [
        { label: t("buy.pay", { price: price }), onClick: pay },
        closeAction(t("buy.cancel")),
      ]);
      if (offers.length > 1) showChoices();
      modal.querySelector(".smi-actions .smi-button").focus();
    }
    function showChoices() {
      var group = document.createElement("fieldset");
      group.className = "smi-choices";
      var legend = document.createElement("legend");
      legend.textContent = t("buy.choose");
      group.appendChild(legend);
      offers.forEach(function (offer) {
        var label = document.createElement("label");
        var input = document.createElement("input");
        input.type = "radio";
        input.name = "smi-model";
        input.value = offer.model;
        input.checked = offer.model === chosen.model;
        input.addEventListener("change", function () {
          chosen = offer;
          describe();
          preview.ask(chosen.model, preview.at);
          modal.querySelector('input[value="' + offer.model + '"]').focus();
        });
        label.appendChild(input);
        label.appendChild(document.createTextNode(" " + t("buy.option", {
          kind: t("model." + offer.kind), scale: offer.scale,
          sizes: sizesOf(checkout, offer), price: priceOf(checkout, offer),
        })));
        group.appendChild(label);
      });
      modal.querySelector("#smi-status").appendChild(group);
    }
    function pay() {
      preview.stop();
      if (chosen.model === checkout.model) {
        window.location.assign(checkout.checkout_url);
        return;
      }
      show("preparing", t("buy.title"), t("buy.preparing"));
      startCheckout(imageUrl, chosen.model)
        .then(function (other) { window.location.assign(other.checkout_url); })
        .catch(function (error) {
          show("error", t("buy.not_started"), error.message || String(error), [closeAction()]);
        });
    }
    var preview = previewBox(imageUrl);
    describe();
    preview.ask(chosen.model, null);
  }

  // -- the free preview: a square of this image, a simple enlargement beside ours --

  function previewBox(imageUrl) {
    var box = document.createElement("div");
    box.className = "smi-preview";
    box.innerHTML =
      '<div class="smi-pick"><img alt=""><div class="smi-square" tabindex="0" role="button"></div></div>' +
      '<p class="smi-note smi-pick-note"></p>' +
      '<div class="smi-pair" hidden><figure><img class="smi-before" alt=""><figcaption></figcaption></figure>' +
      '<figure><img class="smi-after" alt=""><figcaption></figcaption></figure></div>' +
      '<p class="smi-note smi-preview-status" role="status" aria-live="polite"></p>';
    var dialog = modal.querySelector(".smi-dialog");
    dialog.insertBefore(box, dialog.querySelector(".smi-actions"));
    var thumb = box.querySelector(".smi-pick img");
    var square = box.querySelector(".smi-square");
    var pair = box.querySelector(".smi-pair");
    var note = box.querySelector(".smi-preview-status");
    var captions = box.querySelectorAll(".smi-pair figcaption");
    thumb.src = imageUrl;
    box.querySelector(".smi-pick-note").textContent = t("preview.pick");
    square.setAttribute("aria-label", t("preview.square"));
    captions[0].textContent = t("preview.before");
    captions[1].textContent = t("preview.after");
    var state = { at: null, crop: null, model: null, timer: null, asked: 0 };

    function place(crop) {
      var ratio = thumb.clientWidth / crop.width;
      square.style.left = crop.x * ratio + "px";
      square.style.top = crop.y * ratio + "px";
      square.style.width = square.style.height = Math.max(8, crop.size * ratio) + "px";
    }

    function ask(model, at) {
      state.model = model;
      state.at = at;
      var asked = ++state.asked;
      clearTimeout(state.timer);
      pair.hidden = true;
      note.textContent = t("preview.loading");
      var body = { image_url: imageUrl, model: model };
      if (at) { body.x = at[0]; body.y = at[1]; }
      var deadline = null;
      fetch(GATEWAY + "/api/previews", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      })
        .then(function (response) {
          return response.json().catch(function () { return null; }).then(function (answer) {
            if (response.status === 429) {
              throw new Error(t("buy.busy", { seconds: response.headers.get("Retry-After") || "60" }));
            }
            if (!response.ok) throw new Error(t("preview.unavailable"));
            return answer;
          });
        })
        .then(function follow(status) {
          if (asked !== state.asked) return; // a newer square was asked for
          state.crop = status.crop;
          if (thumb.complete) place(status.crop); else thumb.onload = function () { place(status.crop); };
          if (deadline === null) deadline = Date.now() + status.wait_s * 1000;
          if (status.status === "ready") return shown(status);
          if (status.status === "failed" || Date.now() > deadline) {
            note.textContent = t("preview.unavailable");
            return null;
          }
          state.timer = setTimeout(function () {
            fetch(GATEWAY + "/api/previews/" + status.preview_id, { cache: "no-store" })
              .then(function (response) { return response.json(); })
              .then(follow)
              .catch(function () { note.textContent = t("preview.unavailable"); });
          }, 1000);
          return null;
        })
        .catch(function (error) {
          if (asked === state.asked) note.textContent = error.message || t("preview.unavailable");
        });
    }

    function shown(status) {
      var base = GATEWAY + "/api/previews/" + status.preview_id;
      box.querySelector(".smi-before").src = base + "/before.png";
      box.querySelector(".smi-after").src = base + "/after.png";
      box.setAttribute("data-smi-preview", status.preview_id);
      pair.hidden = false;
      note.textContent = "";
    }

    // Clicking or dragging on the picture moves the square; letting go asks for its preview.
    var dragging = false;
    function pointAt(event) {
      var crop = state.crop;
      if (!crop) return null;
      var rect = thumb.getBoundingClientRect();
      var ratio = crop.width / rect.width;
      var x = Math.round((event.clientX - rect.left) * ratio - crop.size / 2);
      var y = Math.round((event.clientY - rect.top) * ratio - crop.size / 2);
      x = Math.max(0, Math.min(crop.width - crop.size, x));
      y = Math.max(0, Math.min(crop.height - crop.size, y));
      place({ x: x, y: y, size: crop.size, width: crop.width, height: crop.height });
      return [x, y];
    }
    var pick = box.querySelector(".smi-pick");
    pick.addEventListener("pointerdown", function (event) {
      dragging = true;
      pointAt(event);
      event.preventDefault();
    });
    pick.addEventListener("pointermove", function (event) { if (dragging) pointAt(event); });
    pick.addEventListener("pointerup", function (event) {
      if (!dragging) return;
      dragging = false;
      var at = pointAt(event);
      if (at) ask(state.model, at);
    });
    square.addEventListener("keydown", function (event) {
      var crop = state.crop;
      var moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (!crop || !moves[event.key]) return;
      event.preventDefault();
      var step = Math.max(1, Math.round(crop.size / 2));
      var x = Math.max(0, Math.min(crop.width - crop.size, crop.x + moves[event.key][0] * step));
      var y = Math.max(0, Math.min(crop.height - crop.size, crop.y + moves[event.key][1] * step));
      ask(state.model, [x, y]);
    });

    return {
      ask: ask,
      get at() { return state.at; },
      stop: function () { state.asked++; clearTimeout(state.timer); },
    };
  }

  function buy(imageUrl) {
    openModal(t("buy.title"));
    show("preparing", t("buy.title"), t("buy.preparing"));
    startCheckout(imageUrl)
      .then(function (checkout) { quote(imageUrl, checkout); })
      .catch(function (error) {
        show("error", t("buy.not_started"), error.message || String(error), [closeAction()]);
      });
  }

  // The absolute http(s) address of a data-smi-image value; null for anything else.
  function imageAddress(value) {
    if (!String(value || "").trim()) return null;
    try {
      var url = new URL(String(value || "").trim(), window.location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.toString() : null;
    } catch (error) {
      return null;
    }
  }

  function attachButtons(root) {
    var marked = (root || document).querySelectorAll("[data-smi-image]:not([data-smi-ready])");
    Array.prototype.forEach.call(marked, function (element) {
      element.setAttribute("data-smi-ready", "");
      // One image's bad address costs that image its button, never the others theirs.
      var imageUrl = imageAddress(element.getAttribute("data-smi-image"));
      if (!imageUrl) {
        if (window.console) window.console.warn("smi-checkout: not an image address", element);
        return;
      }
      var button = element;
      if (element.tagName === "IMG") {
        button = document.createElement("button");
        button.type = "button";
        button.className = "smi-button smi-buy";
        var words = element.getAttribute("data-smi-label");
        button.textContent = words || t("buy.button");
        // The accessible name starts with the words on the button, then names the image.
        var label = element.getAttribute("alt");
        if (label && words) button.setAttribute("aria-label", words + ": " + label);
        else if (label) button.setAttribute("aria-label", t("buy.button_label", { name: label }));
        element.insertAdjacentElement("afterend", button);
      }
      button.addEventListener("click", function (event) {
        event.preventDefault();
        buy(imageUrl);
      });
    });
  }

  // -- coming back from the payment page -------------------------------------

  // The job's message in the buyer's language (a declined card's reason is Stripe's own).
  function message(job) {
    return job.message_key ? t(job.message_key, { scale: job.scale }) : job.message;
  }

  function render(job) {
    var status = job.status;
    if (status === "awaiting_payment" && job.decline_code) {
      var retry = job.checkout_url ? [{ label: t("declined.try_again"), onClick: function () {
        window.location.assign(job.checkout_url);
      } }] : [];
      show("declined", t("declined.title"), job.message, retry.concat([closeAction()]));
      return;
    }
    if (status === "awaiting_payment") {
      show("confirming", t("confirming.title"), t("confirming.text"));
      return;
    }
    if (status === "pending") {
      show("queued", t("queued.title"), message(job), [closeAction()]);
      return;
    }
    if (status === "processing") {
      show("processing", t("processing.title"), message(job) + " " +
        t("processing.done", { percent: Math.round(job.progress * 100) }), [closeAction()],
        job.progress);
      return;
    }
    if (status === "completed" && job.download_url) {
      show("completed", t("completed.title"), message(job), [
        { label: t("completed.download", { scale: job.scale }), href: job.download_url,
          download: true },
        closeAction(),
      ]);
      return;
    }
    if (status === "completed") {
      show("completed", t("completed.title"), t("completed.by_email"), [closeAction()]);
      return;
    }
    if (status === "refunded" || status === "refunding" || status === "failed") {
      show("refunded", t(status === "refunded" ? "refunded.title" : "refunding.title"),
        message(job), [closeAction()]);
      return;
    }
    if (status === "refund_failed") {
      show("refund_failed", t("refund_failed.title"), message(job), [closeAction()]);
      return;
    }
    if (status === "expired") {
      show("expired", t("expired.title"), message(job), [closeAction()]);
      return;
    }
    show("unknown", t("order.title"), message(job) || status, [closeAction()]);
  }

  function follow(jobId, sessionId) {
    var delay = POLL_FIRST_MS;
    var stopped = false;
    var timer = null;
    openModal(t("order.title"), function () {
      stopped = true;
      if (timer) clearTimeout(timer);
    });
    show("loading", t("order.title"), t("order.checking"));

    var jobUrl = GATEWAY + "/api/jobs/" + encodeURIComponent(jobId);
    var returning = Boolean(sessionId);

    function poll() {
      if (stopped) return;
      // Back from paying: the first look tells the gateway so (it asks Stripe if the
      // webhook has not come yet); later looks only read. The buyer key is the proof
      // of payment: only with it does the gateway hand out the download link.
      var request = returning
        ? fetch(jobUrl + "/return", {
          method: "POST",
          headers: jobHeaders(jobId, { "Content-Type": "application/json" }),
          body: JSON.stringify({ session_id: sessionId }),
          cache: "no-store"
        })
        : fetch(jobUrl, { headers: jobHeaders(jobId), cache: "no-store" });
      request
        .then(function (response) {
          if (response.status === 404) throw new Error(t("order.not_found"));
          if (!response.ok) throw { retry: true };
          return response.json();
        })
        .then(function (job) {
          if (stopped) return;
          returning = false;
          render(job);
          var waitingForDecline = job.status === "awaiting_payment" && job.decline_code;
          if (FINAL.indexOf(job.status) >= 0 || waitingForDecline) return;
          schedule();
        })
        .catch(function (error) {
          if (stopped) return;
          if (error && error.retry) { schedule(); return; }
          if (error instanceof TypeError) { schedule(); return; } // network: try again
          show("error", t("order.title"), error.message || String(error), [closeAction()]);
        });
    }

    function schedule() {
      timer = setTimeout(poll, delay);
      delay = Math.min(Math.round(delay * 1.5), POLL_MAX_MS);
    }

    poll();
  }

  function cancelled(jobId) {
    var stopped = false;
    openModal(t("cancelled.title"), function () { stopped = true; });
    show("cancelled", t("cancelled.title"), t("cancelled.text"), [closeAction()]);
    // A customer who was declined and then came back sees why, and may try again.
    // The decline may reach the gateway a moment after the customer: look a few times.
    var looks = 0;
    function look() {
      if (stopped || looks++ >= 3) return;
      var jobUrl = GATEWAY + "/api/jobs/" + encodeURIComponent(jobId);
      fetch(jobUrl, { headers: jobHeaders(jobId), cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (job) {
          if (stopped || !job) return;
          if (job.status === "awaiting_payment" && job.decline_code) render(job);
          else setTimeout(look, 1000);
        })
        .catch(function () { setTimeout(look, 1000); });
    }
    look();
  }

  function onReturn() {
    var outcome = RETURNED.smi_payment;
    var jobId = RETURNED.job_id;
    if (!outcome || !jobId) return;
    var sessionId = RETURNED.session_id;
    if (outcome === "success") follow(jobId, sessionId);
    else if (outcome === "cancel") cancelled(jobId);
  }

  // Every word comes from the catalogue: nothing is shown before it is here.
  var ready = null;

  function start() {
    injectStyles();
    ready = ready || loadStrings();
    ready.then(function () {
      attachButtons(document);
      onReturn();
    });
  }

  window.SellMyImages = {
    attach: function (root) {
      ready = ready || loadStrings();
      ready.then(function () { attachButtons(root); });
    },
    follow: follow,
    gateway: GATEWAY,
    language: LANGUAGE,
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
