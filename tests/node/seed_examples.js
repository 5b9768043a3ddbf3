// The seed's own JavaScript examples (seeds/websocket-actions-api.txt), run unchanged against a
// live gateway with Node and the npm `ws` package. Driven by tests/e2e/test_seed_node.py.
//
// The file has three parts:
//   1. HARNESS (prologue): configuration, stdout reporting, the desktop socket `ws`.
//   2. SEED: the seed's code blocks copied verbatim — getTerminals and its handler,
//      initiatePayment and its paymentComplete handler (plus the usage call), the heartbeat.
//   3. HARNESS (scenarios): runs one scenario and reports what the seed's code did.
//
// Usage: node seed_examples.js <getTerminals|payment|heartbeat|idle>
// Environment:
//   SEED_URL               ws://127.0.0.1:PORT/ws/
//   SEED_KEY               the desktop's API key
//   SEED_AUTH              header (default: `Authorization: Bearer <key>`) or query (`?key=<key>`)
//   SEED_TIME_SCALE        multiplies the seed's timer delays (default 1; 0.05 turns the seed's
//                          30 s ping interval into 1.5 s and its 10 s pong timeout into 0.5 s)
//   SEED_HEARTBEAT_CYCLES  ping/pong cycles the heartbeat scenario waits for (default 4)
//   SEED_DEADLINE_MS       the whole run's deadline (default 20000)
//
// Output: one JSON object per stdout line.
//   {"seed":"log"|"error","text":…}   what the seed's code printed with console.log/console.error
//   {"harness":…}                     what the harness observed (frames, timers, close, result)

// ============================================================================================
// 1. HARNESS (prologue) — not from the seed.
// ============================================================================================
const util = require('util');
const WebSocket = require('ws');

const config = {
  scenario: process.argv[2] || 'getTerminals',
  url: process.env.SEED_URL,
  key: process.env.SEED_KEY || '',
  auth: process.env.SEED_AUTH || 'header',
  timeScale: Number(process.env.SEED_TIME_SCALE || '1'),
  cycles: Number(process.env.SEED_HEARTBEAT_CYCLES || '4'),
  deadlineMs: Number(process.env.SEED_DEADLINE_MS || '20000'),
};

// Every report is one JSON line; waiters resolve when a matching report is emitted.
const reports = [];
const waiters = [];

function emit(report) {
  reports.push(report);
  process.stdout.write(JSON.stringify(report) + '\n');
  for (const waiter of waiters.slice()) {
    if (waiter.match(report)) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve(report);
    }
  }
}

function waitFor(match) {
  const found = reports.find(match);
  if (found) return Promise.resolve(found);
  return new Promise((resolve) => waiters.push({ match, resolve }));
}

// What the seed prints is what the test asserts on.
console.log = (...args) => emit({ seed: 'log', text: util.format(...args) });
console.error = (...args) => emit({ seed: 'error', text: util.format(...args) });

// The real timers, for the harness's own waits.
const realTimers = {
  setTimeout: globalThis.setTimeout,
  setInterval: globalThis.setInterval,
  clearTimeout: globalThis.clearTimeout,
  clearInterval: globalThis.clearInterval,
  setImmediate: globalThis.setImmediate,
};

// The seed's timers, shortened. These module-level bindings shadow the global timer functions
// for the code in this file only (the seed's code below resolves `setInterval`/`setTimeout`
// here; the ws library keeps the real ones). Callbacks and the seed's own delays are unchanged;
// only the delay actually scheduled is multiplied by SEED_TIME_SCALE, and every call is reported.
const timerStats = { intervalTicks: 0, timeoutsFired: 0, timeoutsCleared: 0, pending: new Set() };

const setInterval = (callback, ms, ...args) => {
  emit({ harness: 'setInterval', seedMs: ms, scheduledMs: ms * config.timeScale });
  return realTimers.setInterval(
    () => {
      timerStats.intervalTicks += 1;
      callback(...args);
    },
    ms * config.timeScale,
  );
};

const setTimeout = (callback, ms, ...args) => {
  emit({ harness: 'setTimeout', seedMs: ms, scheduledMs: ms * config.timeScale });
  const handle = realTimers.setTimeout(
    () => {
      timerStats.pending.delete(handle);
      timerStats.timeoutsFired += 1;
      emit({ harness: 'timeoutFired', seedMs: ms });
      callback(...args);
    },
    ms * config.timeScale,
  );
  timerStats.pending.add(handle);
  return handle;
};

const clearTimeout = (handle) => {
  if (timerStats.pending.delete(handle)) timerStats.timeoutsCleared += 1;
  realTimers.clearTimeout(handle);
};

const clearInterval = (handle) => realTimers.clearInterval(handle);

// The application state the seed's getTerminals handler writes to.
let availableTerminals;

// The desktop's socket, as the seed's code expects it in scope.
const wsUrl =
  config.auth === 'query' ? `${config.url}?key=${encodeURIComponent(config.key)}` : config.url;
const ws =
  config.auth === 'query'
    ? new WebSocket(wsUrl)
    : new WebSocket(config.url, { headers: { Authorization: 'Bearer ' + config.key } });

let closingByHarness = false;
ws.on('message', (data) => emit({ harness: 'frame', frame: JSON.parse(data.toString()) }));
ws.on('close', (code, reason) =>
  emit({ harness: 'close', code, reason: reason.toString(), byHarness: closingByHarness }),
);
ws.on('error', (err) => emit({ harness: 'socketError', message: String(err && err.message) }));

// ============================================================================================
// 2. SEED — copied verbatim from seeds/websocket-actions-api.txt.
// ============================================================================================

// ---- getTerminals ----

function getTerminals(ws) {
  ws.send(JSON.stringify({ action: 'getTerminals' }));
}

// Handle response
ws.on('message', (data) => {
  const message = JSON.parse(data.toString());

  if (message.action === 'terminalsResponse') {
    const terminals = message.terminals;

    console.log(`Found ${terminals.length} terminal(s)`);

    terminals.forEach((terminal) => {
      console.log(`- ${terminal.deviceId}: ${terminal.status}`);
    });

    // Store terminals for payment operations
    availableTerminals = terminals;
  }
});

// ---- payment ----

function initiatePayment(ws, terminalId, paymentData) {
  const request = {
    action: 'payment',
    terminalId: terminalId,
    paymentRequest: {
      transactionId: `TXN-${Date.now()}`,
      amount: paymentData.amount,
      currency: paymentData.currency || 'USD',
      paymentMethod: 'CARD',
      products: paymentData.products || [],
      customerInfo: paymentData.customer || {},
      metadata: {
        orderId: paymentData.orderId
      }
    }
  };

  ws.send(JSON.stringify(request));
  console.log(`Payment initiated: ${request.paymentRequest.transactionId}`);

  return request.paymentRequest.transactionId;
}

// Handle payment completion
ws.on('message', (data) => {
  const message = JSON.parse(data.toString());

  if (message.action === 'paymentComplete') {
    const response = message.paymentResponse;

    if (response.status === 'SUCCESS') {
      console.log(`Payment successful: ${response.transactionId}`);
      console.log(`Authorization: ${response.authorizationCode}`);
      // Update order status, print receipt, etc.
    } else {
      console.error(`Payment failed: ${response.errorMessage}`);
      // Handle failure, notify customer
    }
  }
});

// HARNESS: the seed's usage block, unchanged, runs once the socket is open (at the top level it
// would send on a socket still connecting); the function wrapper and `return` are the harness's.
function seedUsage(ws) {
// Usage
const txnId = initiatePayment(ws, 'TERM-001', {
  amount: '99.99',
  orderId: 'ORD-12345',
  products: [
    { id: 'PROD-001', name: 'Widget', price: '99.99', quantity: 1 }
  ]
});
return txnId;
}

// ---- ping / pong ----

let pingTimeout;
let heartbeatInterval;

function startHeartbeat(ws) {
  heartbeatInterval = setInterval(() => {
    ws.send(JSON.stringify({ action: 'ping' }));

    pingTimeout = setTimeout(() => {
      console.log('Connection timeout - reconnecting');
      ws.terminate();
    }, 10000);
  }, 30000);
}

function handlePong() {
  clearTimeout(pingTimeout);
}

ws.on('message', (data) => {
  const message = JSON.parse(data.toString());

  if (message.action === 'pong') {
    handlePong();
  }
});

// ============================================================================================
// 3. HARNESS (scenarios) — not from the seed.
// ============================================================================================

// Observe the seed's handlePong without changing it: the seed's pong handler calls it by name.
const seedHandlePong = handlePong;
const pongStats = { calls: 0, clearedPendingPing: 0 };
handlePong = function () {
  const pingPending = timerStats.pending.has(pingTimeout);
  pongStats.calls += 1;
  if (pingPending) pongStats.clearedPendingPing += 1;
  emit({ harness: 'handlePong', pingPending, calls: pongStats.calls });
  return seedHandlePong();
};

const isFrame = (action) => (r) => r.harness === 'frame' && r.frame.action === action;
const seedLine = (prefix) => (r) => r.seed && r.text.startsWith(prefix);
const closed = () => waitFor((r) => r.harness === 'close');
// Let every 'message' listener of the current frame (the seed's included) finish first.
const settle = () => new Promise((resolve) => realTimers.setImmediate(resolve));

async function closeAndFinish(result) {
  emit({ harness: 'result', scenario: config.scenario, ...result });
  if (ws.readyState === WebSocket.OPEN) {
    closingByHarness = true;
    ws.close(1000);
    await closed();
  }
  process.exit(0);
}

const scenarios = {
  // getTerminals(ws) and its handler: the handler logs and stores the group's terminals.
  async getTerminals() {
    getTerminals(ws);
    await waitFor(isFrame('terminalsResponse'));
    await settle();
    await closeAndFinish({ availableTerminals });
  },

  // The seed's usage call, then its paymentComplete handler on the result.
  async payment() {
    const txnId = seedUsage(ws);
    emit({ harness: 'txnId', txnId });
    await waitFor(isFrame('paymentComplete'));
    await settle();
    await closeAndFinish({ txnId });
  },

  // startHeartbeat(ws) for SEED_HEARTBEAT_CYCLES cycles: each pong must clear its ping's timeout.
  async heartbeat() {
    startHeartbeat(ws);
    const done = waitFor((r) => r.harness === 'handlePong' && r.pingPending && r.calls > 0
      && pongStats.clearedPendingPing >= config.cycles);
    const outcome = await Promise.race([done.then(() => 'cycles'), closed().then(() => 'closed')]);
    clearInterval(heartbeatInterval);
    clearTimeout(pingTimeout);
    await closeAndFinish({
      outcome,
      openAfterCycles: outcome === 'cycles' && ws.readyState === WebSocket.OPEN,
      intervalTicks: timerStats.intervalTicks,
      timeoutsFired: timerStats.timeoutsFired,
      timeoutsCleared: timerStats.timeoutsCleared,
      handlePongCalls: pongStats.calls,
      pongsClearingPendingPing: pongStats.clearedPendingPing,
    });
  },

  // The control: the seed's handlers installed, no heartbeat started; wait for the server.
  async idle() {
    const close = await closed();
    await closeAndFinish({ closeCode: close.code, handlePongCalls: pongStats.calls });
  },
};

async function main() {
  const scenario = scenarios[config.scenario];
  if (!config.url || !scenario) {
    emit({ harness: 'usageError', scenario: config.scenario, url: config.url || null });
    process.exit(2);
  }
  realTimers.setTimeout(() => {
    emit({ harness: 'deadline', scenario: config.scenario, ms: config.deadlineMs });
    process.exit(3);
  }, config.deadlineMs).unref();
  const first = await Promise.race([
    waitFor((r) => r.harness === 'frame'),
    closed(),
  ]);
  if (!(first.harness === 'frame' && first.frame.action === 'connected')) {
    emit({ harness: 'notConnected', first });
    await closed();
    process.exit(1);
  }
  await scenario();
}

main().catch((err) => {
  emit({ harness: 'exception', message: String(err && err.stack) });
  process.exit(1);
});
