// A fake payment terminal for tests/e2e/test_seed_node.py (not seed code): it connects with its
// terminal key and answers every paymentRequest with a paymentResponse.
//
// Environment:
//   TERMINAL_URL        ws://127.0.0.1:PORT/ws/
//   TERMINAL_KEY        the terminal's API key (sent as `Authorization: Bearer <key>`)
//   TERMINAL_BEHAVIOUR  approve (default: SUCCESS with an authorizationCode) or decline
//                       (DECLINED with errorMessage "Insufficient funds")
//   TERMINAL_PING_MS    keep-alive ping interval (default 1000)
//
// Output: one JSON object per stdout line: {"event":"connected"|"paymentRequest"|"answered"|
// "frame"|"close"|"error", …}. SIGTERM closes the socket with 1000 and exits.
const WebSocket = require('ws');

const url = process.env.TERMINAL_URL;
const key = process.env.TERMINAL_KEY || '';
const behaviour = process.env.TERMINAL_BEHAVIOUR || 'approve';
const pingMs = Number(process.env.TERMINAL_PING_MS || '1000');

function emit(event) {
  process.stdout.write(JSON.stringify(event) + '\n');
}

let approvals = 0;

function answer(paymentRequest) {
  const transactionId = paymentRequest.transactionId;
  if (behaviour === 'decline') {
    return { transactionId, status: 'DECLINED', errorMessage: 'Insufficient funds' };
  }
  approvals += 1;
  const authorizationCode = `A${String(100000 + approvals)}`;
  return { transactionId, status: 'SUCCESS', authorizationCode };
}

const ws = new WebSocket(url, { headers: { Authorization: 'Bearer ' + key } });
let pinger;

ws.on('message', (data) => {
  const frame = JSON.parse(data.toString());
  if (frame.action === 'connected') {
    emit({ event: 'connected', frame });
    pinger = setInterval(() => ws.send(JSON.stringify({ action: 'ping' })), pingMs);
  } else if (frame.action === 'paymentRequest') {
    emit({ event: 'paymentRequest', frame });
    const paymentResponse = answer(frame.paymentRequest);
    ws.send(JSON.stringify({ action: 'paymentResponse', paymentResponse }));
    emit({ event: 'answered', paymentResponse });
  } else if (frame.action !== 'pong') {
    emit({ event: 'frame', frame });
  }
});

ws.on('close', (code, reason) => {
  clearInterval(pinger);
  emit({ event: 'close', code, reason: reason.toString() });
  process.exit(0);
});

ws.on('error', (err) => emit({ event: 'error', message: String(err && err.message) }));

process.on('SIGTERM', () => {
  if (ws.readyState === WebSocket.OPEN) ws.close(1000);
  else process.exit(0);
});
