/* POS Gateway dashboard: keeps the page live over /ws/dashboard/.
 *
 * The socket only says that something changed (a device, payment, session or request of one
 * of the user's stores). The page then fetches its own live region again (the same URL with the
 * X-Fragment header), so it shows exactly what a reload would: same filters, same page, same
 * store scope. A payment's page also refetches on its refunds' events. On every (re)connect the region is fetched once too, so nothing is missed while
 * the socket was down. Some changes publish no event (a terminal's pings move its last activity;
 * midnight starts a new "today"): while live, the region is also fetched when nothing refreshed
 * it for refreshEveryMs (30 s), and whenever the tab becomes visible again. The indicator in the
 * top bar says whether the page is live, or "degraded" while the gateway's channel layer
 * (Redis) is down: payments are then still taken, and their hand-off to terminals retried. A
 * refresh keeps the keyboard's focus on the same link or button (found again by id, or by its
 * row and position) when it is still there.
 */
(() => {
  "use strict";

  const body = document.body;
  const wanted = new Set((body.dataset.liveEvents || "").split(/\s+/).filter(Boolean));
  const onlyTransaction = body.dataset.liveTransaction || null;
  const indicator = document.getElementById("live");
  const region = document.querySelector("[data-live-region]");
  const LABELS = {
    connecting: ["connecting…", "Connecting to the live feed"],
    live: ["live", "Updates arrive as they happen"],
    offline: ["not live · reconnecting…", "The live feed is down: what you see may be out of date"],
    degraded: [
      "degraded · reconnecting…",
      "The gateway's channel layer (Redis) is down: payments are still taken and reach their " +
        "terminals once it is back; this page is not live meanwhile",
    ],
  };
  // The socket's close code when the gateway's channel layer is down (CLOSE_DEGRADED).
  const CLOSE_DEGRADED = 4503;
  // Read by the browser tests, and handy in the console.
  // refreshEveryMs may be lowered from the console (or a test) at any time.
  const state = {
    status: "connecting",
    connects: 0,
    events: 0,
    refreshes: 0,
    last: null,
    refreshEveryMs: 30000,
    refreshedAt: Date.now(),
  };
  window.posgwDashboard = state;

  function setStatus(status) {
    state.status = status;
    if (!indicator) return;
    indicator.dataset.state = status;
    indicator.textContent = LABELS[status][0];
    indicator.title = LABELS[status][1];
  }

  // --- Relative times ("5 min ago"), the same rule as the server's ---------------------------
  function agoText(seconds) {
    seconds = Math.floor(seconds);
    if (seconds < 5) return "just now";
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
    return `${Math.floor(seconds / 86400)} d ago`;
  }
  function tickTimes(root) {
    root.querySelectorAll("time[data-ago]").forEach((el) => {
      const at = Date.parse(el.getAttribute("datetime"));
      if (!Number.isNaN(at)) el.textContent = agoText(Math.max(0, (Date.now() - at) / 1000));
    });
  }
  setInterval(() => tickTimes(document), 5000);

  // --- Fetching the live region again -------------------------------------------------------
  let fetching = false;
  let fetchAgain = false;
  let timer = null;

  function scheduleRefresh(delay) {
    clearTimeout(timer);
    timer = setTimeout(refresh, delay === undefined ? 150 : delay);
  }

  function rowStates() {
    const states = new Map();
    region.querySelectorAll("[data-key]").forEach((el) => {
      const table = el.closest("table");
      states.set(`${table ? table.id : ""}:${el.dataset.key}`, el.dataset.status || el.dataset.state || "");
    });
    return states;
  }

  // The keyboard's place: a refresh replaces the region, and with it the focused link or button.
  // Remember which one it was (its id, or its position among the focusable elements of its row
  // or item), and focus the same one in the new region, so a keyboard user is not sent back to
  // the top of the page by every payment of the store.
  const FOCUSABLE = "a[href], button, input, select, textarea, [tabindex]";

  function focusedPlace() {
    const el = document.activeElement;
    if (!el || el === body || !region.contains(el)) return null;
    if (el.id) return { id: el.id };
    const holder = el.closest("[data-key]") || region;
    const table = holder.closest("table");
    return {
      key: holder === region ? null : holder.dataset.key,
      table: table ? table.id : "",
      index: Array.from(holder.querySelectorAll(FOCUSABLE)).indexOf(el),
    };
  }

  function restoreFocus(place) {
    if (!place || (document.activeElement && document.activeElement !== body)) return;
    let el = null;
    if (place.id) {
      el = document.getElementById(place.id);
    } else {
      const holder = place.key === null ? region : Array.from(region.querySelectorAll("[data-key]")).find(
        (h) => h.dataset.key === place.key && ((h.closest("table") || {}).id || "") === place.table,
      );
      if (holder) el = holder.querySelectorAll(FOCUSABLE)[place.index] || null;
    }
    if (el) el.focus({ preventScroll: true });
  }

  async function refresh() {
    if (!region) return;
    if (fetching) {
      fetchAgain = true;
      return;
    }
    fetching = true;
    try {
      const response = await fetch(location.href, {
        headers: { "X-Fragment": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.headers.get("X-Fragment") !== "1") {
        // Logged out, or no longer allowed: let the server say so in a whole page.
        location.reload();
        return;
      }
      const html = await response.text();
      const before = rowStates();
      const place = focusedPlace();
      region.innerHTML = html;
      restoreFocus(place);
      // Rows that are new or changed status flash once.
      region.querySelectorAll("[data-key]").forEach((el) => {
        const table = el.closest("table");
        const key = `${table ? table.id : ""}:${el.dataset.key}`;
        const now = el.dataset.status || el.dataset.state || "";
        if (before.size && before.get(key) !== now) el.classList.add("changed");
      });
      tickTimes(region);
      state.refreshes += 1;
      state.refreshedAt = Date.now();
    } catch (error) {
      // The network is down: the socket notices too, and its reconnect refreshes again.
    } finally {
      fetching = false;
      if (fetchAgain) {
        fetchAgain = false;
        scheduleRefresh();
      }
    }
  }

  // Changes without an event: refresh when the page is live and visible and nothing refreshed
  // it for a while (an event-driven refresh resets the clock), and on coming back into view.
  setInterval(() => {
    if (state.status !== "live" || document.visibilityState === "hidden") return;
    if (Date.now() - state.refreshedAt >= state.refreshEveryMs) {
      state.refreshedAt = Date.now(); // one fetch per period, even while one is slow
      scheduleRefresh(0);
    }
  }, 1000);
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.status === "live") scheduleRefresh(0);
  });

  // A transaction's page follows it, and a payment's page its refunds too (their events name
  // the payment as originalTransactionId).
  function relevant(event) {
    if (!wanted.has(event.type)) return false;
    if (!onlyTransaction) return true;
    return (
      event.transactionId === onlyTransaction ||
      event.originalTransactionId === onlyTransaction ||
      (event.transactionIds || []).includes(onlyTransaction)
    );
  }

  // --- The socket, with reconnects and backoff ----------------------------------------------
  let attempt = 0;
  let socket = null;
  let lastHeard = 0;

  function connect() {
    if (state.status !== "degraded") setStatus(attempt ? "offline" : "connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    try {
      socket = new WebSocket(`${scheme}//${location.host}/ws/dashboard/`);
    } catch (error) {
      retry();
      return;
    }
    socket.onmessage = (message) => {
      lastHeard = Date.now();
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (error) {
        return;
      }
      if (event.type === "ready") {
        attempt = 0;
        state.connects += 1;
        setStatus("live");
        scheduleRefresh(0); // whatever happened while we were not subscribed
        return;
      }
      if (event.type === "pong") return;
      state.events += 1;
      state.last = event;
      if (relevant(event)) scheduleRefresh();
    };
    socket.onclose = (closed) => {
      socket = null;
      setStatus(closed.code === CLOSE_DEGRADED ? "degraded" : "offline");
      // 4401: the login session ended. The fragment answers with the login page, so the page
      // reloads to it instead of retrying a socket that will be refused.
      if (closed.code === 4401) refresh();
      retry();
    };
  }

  function retry() {
    attempt += 1;
    const base = Math.min(15000, 500 * 2 ** Math.min(attempt - 1, 5));
    setTimeout(connect, base * (0.75 + Math.random() * 0.5));
  }

  // A socket can die without a close (a laptop lid, a dropped route): ping, and give up on it
  // when nothing comes back.
  setInterval(() => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (lastHeard && Date.now() - lastHeard > 45000) {
      socket.close();
      return;
    }
    socket.send('{"type":"ping"}');
  }, 20000);

  // --- Small page helpers -------------------------------------------------------------------
  document.addEventListener("submit", (e) => {
    const message = e.target.dataset ? e.target.dataset.confirm : null;
    if (message && !window.confirm(message)) e.preventDefault();
  });
  document.addEventListener("click", (e) => {
    const button = e.target.closest("[data-copy]");
    if (!button) return;
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    const text = source.textContent.trim();
    const done = () => { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, () => selectText(source));
    } else {
      selectText(source);
    }
  });
  function selectText(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }
  document.addEventListener("click", (e) => {
    if (e.target.closest("[data-print]")) window.print();
  });
  // A key is shown in the answer to a POST: make a reload fetch the list, not repeat the POST.
  const once = document.querySelector("[data-replace-url]");
  if (once && history.replaceState) history.replaceState(null, "", once.dataset.replaceUrl);

  tickTimes(document);
  if (wanted.size) connect();
})();
