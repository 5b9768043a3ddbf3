// Adyen's own Node library (npm @adyen/api-library, TerminalCloudAPI.sync/async, unpatched) takes
// payments through the gateway exactly as a POS takes them through Adyen's cloud, while this
// same process plays the payment terminal on a real WebSocket. Driven by
// tests/e2e/test_adyen_node.py, which then checks the gateway's database through its REST API.
//
// One run does every step below in order (one Node start for the lot):
//   pay1099 / retry1099  PaymentRequest 10.99 EUR, then the same ServiceID again (one payment)
//   pay03 / payJpy       0.3 EUR and 1500 JPY
//   declined             the terminal declines            -> Failure / Refusal
//   unreachable          a terminal of the store that is not connected -> UnreachableHost
//   held                 a sync payment the terminal holds; while it waits:
//     busy                 another payment on that terminal -> Failure / Busy
//     statusInFlight       TransactionStatusRequest           -> Failure / InProgress
//     abort                AbortRequest                       -> HTTP 200, empty body
//   held (its answer)    the original sync call ends       -> Failure / Aborted
//   statusAborted        TransactionStatusRequest          -> Success, repeated Failure / Aborted
//   lost                 a sync payment whose response the POS gives up on (client timeout)
//   statusLost           once the terminal approved it     -> Success, repeated PaymentResponse
//   statusUnknown        a ServiceID never sent            -> Failure / NotFound
//   reversal / overReversal  4.00 of the 10.99 payment, then 7.00 (over the 6.99 left)
//   async                api.async(PaymentRequest) -> "ok" (the answer goes to the desktop socket)
//   wrongKey             -> HttpClientException 401
//   terminal             what the terminal was sent (paymentRequest, refundRequest, cancelPayment)
//
// The TLS CA is trusted through NODE_EXTRA_CA_CERTS (the library and `ws` alike), never by
// turning verification off.
//
// Environment: GATEWAY_URL (https://…), GATEWAY_KEY (desktop key), TERMINAL_URL (wss://…/ws/),
// TERMINAL_KEY, POI_ID (the connected terminal), OFFLINE_POI_ID (one never connected),
// SALE_ID (default POS-NODE), RUN (a few characters keeping ServiceIDs unique per run).
//
// Output: one JSON object per stdout line: {"step", "result", "types"} with `result` what
// sync()/async() returned (the library's parsed objects, JSON.stringify'd) and `types` the
// library's model class of each body; or {"step", "error": {name, message, statusCode}}.
const WebSocket = require('ws');
const { Client, TerminalCloudAPI } = require('@adyen/api-library');

const baseUrl = process.env.GATEWAY_URL;
const key = process.env.GATEWAY_KEY || '';
const poiId = process.env.POI_ID || 'TERM-001';
const offlinePoiId = process.env.OFFLINE_POI_ID || 'TERM-OFF';
const saleId = process.env.SALE_ID || 'POS-NODE';
const run = (process.env.RUN || 'r').slice(0, 3);

const started = Date.now();

function emit(report) {
  process.stdout.write(JSON.stringify({ ...report, ms: Date.now() - started }) + '\n');
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// --- The terminal: a real WebSocket, scripted by transactionId ---------------------------------
// HOLD-… payments are not answered until a cancelPayment (-> CANCELLED) or release();
// DECL-… are declined; everything else is approved. Refunds are approved.
const sent = []; // every frame the gateway sent the terminal that asks it something
const waiters = [];
let terminal;
let approvals = 0;

function terminalSend(frame) {
  terminal.send(JSON.stringify(frame));
}

function answerPayment(transactionId, status) {
  const paymentResponse = { transactionId, status };
  if (status === 'SUCCESS') {
    approvals += 1;
    paymentResponse.authorizationCode = `AUTH${approvals}`;
  } else {
    paymentResponse.errorMessage = status === 'DECLINED' ? 'Insufficient funds' : 'Cancelled';
  }
  terminalSend({ action: 'paymentResponse', paymentResponse });
}

const held = new Set();

function onTerminalFrame(frame) {
  if (frame.action === 'paymentRequest') {
    const tid = frame.paymentRequest.transactionId;
    sent.push({ action: frame.action, transactionId: tid, amount: frame.paymentRequest.amount });
    if (tid.startsWith('HOLD')) held.add(tid);
    else answerPayment(tid, tid.startsWith('DECL') ? 'DECLINED' : 'SUCCESS');
  } else if (frame.action === 'refundRequest') {
    const refund = frame.refundRequest;
    sent.push({ action: frame.action, transactionId: refund.transactionId, amount: refund.amount });
    terminalSend({
      action: 'refundResponse',
      refundResponse: { transactionId: refund.transactionId, status: 'SUCCESS' },
    });
  } else if (frame.action === 'cancelPayment') {
    sent.push({ action: frame.action, transactionId: frame.transactionId });
    if (held.delete(frame.transactionId)) answerPayment(frame.transactionId, 'CANCELLED');
  }
  for (const waiter of waiters.slice()) {
    if (waiter.match(frame)) {
      waiters.splice(waiters.indexOf(waiter), 1);
      waiter.resolve(frame);
    }
  }
}

function terminalReceives(action, transactionId) {
  const seen = (f) =>
    f.action === action &&
    (f.transactionId === transactionId ||
      (f.paymentRequest && f.paymentRequest.transactionId === transactionId));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`the terminal got no ${action} ${transactionId}`)),
      10000,
    );
    waiters.push({
      match: seen,
      resolve: (frame) => {
        clearTimeout(timer); // a pending timer would keep Node running
        resolve(frame);
      },
    });
  });
}

function release(transactionId, status) {
  held.delete(transactionId);
  answerPayment(transactionId, status);
}

function connectTerminal() {
  return new Promise((resolve, reject) => {
    terminal = new WebSocket(process.env.TERMINAL_URL, {
      headers: { Authorization: 'Bearer ' + (process.env.TERMINAL_KEY || '') },
    });
    terminal.on('message', (data) => {
      const frame = JSON.parse(data.toString());
      if (frame.action === 'connected') resolve();
      onTerminalFrame(frame);
    });
    terminal.on('error', reject);
  });
}

// --- The POS: Adyen's library, as Adyen's documentation shows it ------------------------------
function makeApi(apiKey, options = {}) {
  const client = new Client({
    apiKey,
    environment: 'LIVE', // LIVE without a region keeps terminalApiCloudEndpoint as given
    terminalApiCloudEndpoint: `${baseUrl}/terminal-api`,
    ...options,
  });
  return new TerminalCloudAPI(client);
}

function header(category, serviceId, poi = poiId) {
  return {
    ProtocolVersion: '3.0',
    MessageClass: 'Service',
    MessageCategory: category,
    MessageType: 'Request',
    ServiceID: `${run}${serviceId}`.slice(0, 10),
    SaleID: saleId,
    POIID: poi,
  };
}

function paymentRequest(serviceId, transactionId, amount, currency = 'EUR', poi = poiId) {
  return {
    SaleToPOIRequest: {
      MessageHeader: header('Payment', serviceId, poi),
      PaymentRequest: {
        SaleData: {
          SaleTransactionID: { TransactionID: transactionId, TimeStamp: new Date().toISOString() },
        },
        PaymentTransaction: { AmountsReq: { Currency: currency, RequestedAmount: amount } },
      },
    },
  };
}

function reference(category, serviceId, refServiceId, extra = {}) {
  return {
    SaleToPOIRequest: {
      MessageHeader: header(category, serviceId),
      [`${category}Request`]: {
        MessageReference: {
          MessageCategory: 'Payment',
          SaleID: saleId,
          ServiceID: `${run}${refServiceId}`.slice(0, 10),
        },
        ...extra,
      },
    },
  };
}

function reversalRequest(serviceId, originalTid, amount) {
  return {
    SaleToPOIRequest: {
      MessageHeader: header('Reversal', serviceId),
      ReversalRequest: {
        OriginalPOITransaction: { POITransactionID: { TransactionID: originalTid, TimeStamp: '' } },
        ReversalReason: 'MerchantCancel',
        ReversedAmount: amount,
      },
    },
  };
}

// The library's model class of each body it parsed (proof it deserialised into its types).
function types(result) {
  const out = {};
  const walk = (value, path) => {
    if (value === null || typeof value !== 'object' || value instanceof Date) return;
    if (value.constructor && value.constructor.name !== 'Object') {
      out[path] = value.constructor.name;
    }
    for (const [k, v] of Object.entries(value)) {
      if (v !== undefined) walk(v, path ? `${path}.${k}` : k);
    }
  };
  walk(result, '');
  return out;
}

async function step(name, call) {
  try {
    const result = await call();
    emit({ step: name, result, types: types(result) });
    return result;
  } catch (e) {
    emit({ step: name, error: { name: e.name, message: e.message, statusCode: e.statusCode } });
    return undefined;
  }
}

async function statusUntilFinished(name, api, serviceId, refServiceId) {
  for (let attempt = 0; attempt < 50; attempt += 1) {
    const result = await api.sync(reference('TransactionStatus', `${serviceId}${attempt}`, refServiceId));
    const response = result.SaleToPOIResponse.TransactionStatusResponse.Response;
    if (response.ErrorCondition !== 'InProgress') {
      emit({ step: name, result, types: types(result), attempts: attempt + 1 });
      return;
    }
    await sleep(100);
  }
  emit({ step: name, error: { message: 'still InProgress' } });
}

async function payments() {
  await connectTerminal();
  const api = makeApi(key);

  await step('pay1099', () => api.sync(paymentRequest('P1', 'PAY-1099', 10.99)));
  await step('retry1099', () => api.sync(paymentRequest('P1', 'PAY-1099', 10.99)));
  await step('pay03', () => api.sync(paymentRequest('P2', 'PAY-03', 0.3)));
  await step('payJpy', () => api.sync(paymentRequest('P3', 'PAY-JPY', 1500, 'JPY')));
  await step('declined', () => api.sync(paymentRequest('P4', 'DECL-1', 5)));
  await step('unreachable', () =>
    api.sync(paymentRequest('P5', 'PAY-OFF', 5, 'EUR', offlinePoiId)),
  );

  // A payment in flight: busy, its status, then aborted; the original sync call's answer.
  const forwarded = terminalReceives('paymentRequest', 'HOLD-A');
  const heldCall = step('held', () => api.sync(paymentRequest('H1', 'HOLD-A', 20)));
  await forwarded;
  await step('busy', () => api.sync(paymentRequest('H2', 'PAY-BUSY', 1)));
  await step('statusInFlight', () => api.sync(reference('TransactionStatus', 'HS1', 'H1')));
  const cancelled = terminalReceives('cancelPayment', 'HOLD-A');
  await step('abort', () =>
    api.sync(reference('Abort', 'HA1', 'H1', { AbortReason: 'MerchantAbort' })),
  );
  await cancelled;
  await heldCall;
  await step('statusAborted', () => api.sync(reference('TransactionStatus', 'HS2', 'H1')));

  // A lost response: the POS stops waiting; the payment goes on, and its status tells the end.
  const impatient = makeApi(key, { connectionTimeoutMillis: 300 });
  const lostForwarded = terminalReceives('paymentRequest', 'HOLD-LOST');
  await step('lost', () => impatient.sync(paymentRequest('L1', 'HOLD-LOST', 25.5)));
  await lostForwarded;
  await sleep(200); // the gateway has seen the client go
  release('HOLD-LOST', 'SUCCESS');
  await statusUntilFinished('statusLost', api, 'LS', 'L1');
  await step('statusUnknown', () => api.sync(reference('TransactionStatus', 'US1', 'NEVER')));

  await step('reversal', () => api.sync(reversalRequest('R1', 'PAY-1099', 4)));
  await step('overReversal', () => api.sync(reversalRequest('R2', 'PAY-1099', 7)));

  const asyncApproved = terminalReceives('paymentRequest', 'PAY-ASYNC');
  await step('async', () => api.async(paymentRequest('A1', 'PAY-ASYNC', 12.34)));
  await asyncApproved;

  await step('wrongKey', () => makeApi('not-a-key').sync(paymentRequest('W1', 'PAY-KEY', 1)));

  emit({ step: 'terminal', sent });
  terminal.close(1000);
}

payments().then(
  () => emit({ step: 'done' }),
  (e) => {
    emit({ step: 'crashed', error: { name: e.name, message: e.message, stack: e.stack } });
    process.exit(1);
  },
);
