// Adyen's own Node library (npm @adyen/api-library, TerminalCloudAPI) pointed at the gateway, used
// exactly as a POS uses it against Adyen's cloud: begin and end a Terminal API session over
// sync(), again over async(), and read a Failure. Driven by tests/e2e/test_adyen_node.py.
//
// The library speaks only HTTPS and verifies the server's certificate with Node's trust store:
// a private CA is trusted with NODE_EXTRA_CA_CERTS, never by turning verification off (this
// script passes no certificatePath, so the library installs no verifier of its own).
//
// Usage: node adyen_session.js [sessions|failures|probe|all]
//   sessions  Begin + End over sync(), then another Begin + End over async()
//   failures  a Begin for an unknown POIID over sync() and async(), for another store's terminal,
//             an End with a wrong key
//   probe     one sync Begin for an unknown POIID (shows whether TLS verification passes)
//   all       sessions, then failures
// Environment:
//   GATEWAY_URL     https://127.0.0.1:PORT (the library appends /terminal-api… below + /sync)
//   GATEWAY_KEY     a desktop's API key (sent by the library as X-API-Key)
//   POI_ID          the terminal's deviceId
//   SALE_ID         the POS's SaleID (default POS-NODE)
//   SESSION_PREFIX  session ids are PREFIX-sync and PREFIX-async (default node)
//   OTHER_STORE_POI_ID  (failures) another store's terminal: must look exactly like an unknown one
//
// Output: one JSON object per stdout line:
//   {"step", "result": <what sync()/async() returned>, "wire": {"header", "body"}}
//   {"step", "error": {"name", "message", "statusCode", "code"}, "wire": …}
// "wire" is what Node actually sent: the raw request head (method, path, headers as written,
// including Transfer-Encoding) and the body, recorded by wrapping https.request without
// changing anything it does.
const https = require('https');
const { Client, TerminalCloudAPI } = require('@adyen/api-library');

const scenario = process.argv[2] || 'all';
const baseUrl = process.env.GATEWAY_URL;
const key = process.env.GATEWAY_KEY || '';
const poiId = process.env.POI_ID || 'TERM-001';
const saleId = process.env.SALE_ID || 'POS-NODE';
const prefix = process.env.SESSION_PREFIX || 'node';
const otherStorePoiId = process.env.OTHER_STORE_POI_ID || '';

function emit(report) {
  process.stdout.write(JSON.stringify(report) + '\n');
}

// --- What goes over the wire (observation only) ----------------------------------------------
let wire = null;
const realRequest = https.request;
https.request = function request(...args) {
  const req = realRequest.apply(this, args);
  const seen = { header: null, body: '' };
  wire = seen;
  const write = req.write;
  req.write = function (chunk, ...rest) {
    if (chunk) seen.body += Buffer.isBuffer(chunk) ? chunk.toString('utf8') : String(chunk);
    const out = write.call(this, chunk, ...rest);
    seen.header = req._header; // the head as Node wrote it (set by flushHeaders)
    return out;
  };
  return req;
};

// --- The POS side, as Adyen's documentation shows it --------------------------------------------
function makeApi(apiKey) {
  const client = new Client({
    apiKey,
    environment: 'LIVE', // LIVE without a region keeps terminalApiCloudEndpoint as given
    terminalApiCloudEndpoint: `${baseUrl}/terminal-api`,
  });
  return new TerminalCloudAPI(client);
}

let serviceCounter = 0;

function adminRequest({ sessionId, type, poi = poiId, idKey = 'Id', operation }) {
  const identification = { Session: { [idKey]: sessionId, Type: type } };
  if (operation !== undefined) identification.Operation = operation;
  serviceCounter += 1;
  return {
    SaleToPOIRequest: {
      MessageHeader: {
        ProtocolVersion: '3.0',
        MessageClass: 'Service',
        MessageCategory: 'Admin',
        MessageType: 'Request',
        ServiceID: `${prefix.slice(-6)}${serviceCounter}`,
        SaleID: saleId,
        POIID: poi,
      },
      AdminRequest: {
        ServiceIdentification: Buffer.from(JSON.stringify(identification)).toString('base64'),
      },
    },
  };
}

const waitingScreen = (type, ms) => ({
  Type: type,
  Variant: 'WaitingScreen',
  UserInterfaceData: { WaitingScreenTimeoutMs: ms },
});

async function step(name, call) {
  wire = null;
  try {
    const result = await call();
    emit({ step: name, result, wire });
  } catch (e) {
    emit({
      step: name,
      error: { name: e.name, message: e.message, statusCode: e.statusCode, code: e.code },
      wire,
    });
  }
}

async function sessions() {
  const api = makeApi(key);
  const syncId = `${prefix}-sync`;
  const asyncId = `${prefix}-async`;

  // Operation as a list, Session.Id spelled "Id".
  await step('syncBegin', () =>
    api.sync(
      adminRequest({
        sessionId: syncId,
        type: 'Begin',
        operation: [waitingScreen('Payment', 5000), waitingScreen('InputRequest', 3000)],
      }),
    ),
  );
  await step('syncEnd', () => api.sync(adminRequest({ sessionId: syncId, type: 'End' })));

  // Operation as one object, Session.ID spelled "ID" (the seed uses both).
  await step('asyncBegin', () =>
    api.async(
      adminRequest({
        sessionId: asyncId,
        type: 'Begin',
        idKey: 'ID',
        operation: waitingScreen('DisplayRequest', 2000),
      }),
    ),
  );
  await step('asyncEnd', () =>
    api.async(adminRequest({ sessionId: asyncId, type: 'End', idKey: 'ID' })),
  );
}

async function failures() {
  const api = makeApi(key);
  const unknown = adminRequest({
    sessionId: `${prefix}-nowhere`,
    type: 'Begin',
    poi: 'NO-SUCH-TERMINAL',
    operation: waitingScreen('Payment', 5000),
  });
  await step('syncUnknownPoi', () => api.sync(unknown));
  await step('asyncUnknownPoi', () => api.async(unknown));
  if (otherStorePoiId) {
    const other = adminRequest({
      sessionId: `${prefix}-other`,
      type: 'Begin',
      poi: otherStorePoiId,
      operation: waitingScreen('Payment', 5000),
    });
    await step('syncOtherStorePoi', () => api.sync(other));
  }

  await step('wrongKey', () =>
    makeApi('not-a-key').sync(adminRequest({ sessionId: `${prefix}-x`, type: 'End' })),
  );
}

async function probe() {
  const api = makeApi(key);
  await step('probe', () =>
    api.sync(
      adminRequest({
        sessionId: `${prefix}-probe`,
        type: 'Begin',
        poi: 'NO-SUCH-TERMINAL',
        operation: waitingScreen('Payment', 5000),
      }),
    ),
  );
}

async function all() {
  await sessions();
  await failures();
}

const run = { sessions, failures, probe, all }[scenario];
if (!run) {
  emit({ step: 'usage', error: { message: `unknown scenario ${scenario}` } });
  process.exit(2);
}
run().then(
  () => emit({ step: 'done' }),
  (e) => {
    emit({ step: 'crashed', error: { name: e.name, message: e.message } });
    process.exit(1);
  },
);
