// clerk-ledger pages: start ClerkJS (loaded by the layout from the instance's
// Frontend API host), mount its sign-in or user button, renew an expired
// session cookie, and show times in the reader's time zone. The server renders
// everything else; without this script the pages still read correctly.
(function () {
  "use strict";
  var body = document.body;
  var page = body.dataset.page;
  var signedIn = body.dataset.signedIn === "true";

  // Times: the server writes UTC; show them in the browser's zone, in one
  // format, with the exact UTC instant on hover.
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) {
      if (!t.title) t.title = t.textContent;
      t.textContent = d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
    }
  });

  // An avatar that cannot load leaves the initials underneath visible.
  document.querySelectorAll(".avatar img").forEach(function (img) {
    function drop() { img.remove(); }
    img.addEventListener("error", drop);
    if (img.complete && img.naturalWidth === 0) drop();
  });

  if (body.dataset.clerk !== "on") return;

  function status(msg) {
    var el = document.getElementById("clerk-status");
    if (el) el.textContent = msg;
  }

  // reloadOnce reloads unless this page already did within 15 s: a server
  // that keeps disagreeing with ClerkJS must not cause a reload loop.
  function reloadOnce() {
    var key = "ledger:reloaded-at";
    var last = Number(sessionStorage.getItem(key) || 0);
    if (Date.now() - last < 15000) {
      status("Your session could not be renewed. Sign in again from the start page.");
      return;
    }
    sessionStorage.setItem(key, String(Date.now()));
    window.location.reload();
  }

  var Clerk = window.Clerk;
  var ClerkUI = window.__internal_ClerkUICtor;
  if (!Clerk || !ClerkUI) {
    var mount = document.querySelector("[data-clerk-host]");
    status("Clerk could not be loaded" + (mount ? " from " + mount.dataset.clerkHost : "") + ". Check your connection and reload.");
    return;
  }

  Clerk.load({ ui: { ClerkUI: ClerkUI } }).then(function () {
    if (page === "refresh") {
      if (Clerk.session) {
        // getToken() renews the __session cookie.
        Clerk.session.getToken().then(reloadOnce, function () {
          status("Your session could not be renewed. Sign in again.");
        });
      } else {
        reloadOnce();
      }
      return;
    }
    var button = document.getElementById("user-button");
    if (signedIn && button) Clerk.mountUserButton(button);
    var signIn = document.getElementById("sign-in");
    if (!signedIn && signIn) {
      signIn.textContent = "";
      Clerk.mountSignIn(signIn);
    }
    // Signing in or out in ClerkJS changes what the server shows: reload.
    Clerk.addListener(function (e) {
      var now = Boolean(e.user);
      if (now !== signedIn) reloadOnce();
    });
  }, function () {
    status("Clerk could not start. Reload to try again.");
  });
})();
