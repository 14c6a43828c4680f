// WebSocket load generator for bench/run.py: one scenario per run, results
// as one JSON object on stdout. Runs on its own core, apart from the server.
//
//   node loadgen.mjs '{"scenario": "echo", "url": "ws://127.0.0.1:8000/echo/ws/", ...}'
//
// Scenarios:
//   echo       C connections, each sends a message and waits for its echo, for
//              `seconds` after `warmup`: messages/s and round-trip percentiles.
//   connect    open N connections (at most `inflight` handshakes at a time),
//              hold them `hold` seconds, then send one message on every one at
//              once ("burst") and count the echoes for `burstWindow` seconds.
//   subscribe  N live search subscribers to one query for `seconds`; counts
//              the result pushes (bench/run.py counts the upstream requests).
//   broadcast  M members of one group; member 0 sends 64-byte messages at
//              `rate`/s for `seconds`; delivery latency from send to receipt
//              over all members, and delivered / expected.
import { WebSocket } from "ws";

const options = JSON.parse(process.argv[2]);
const clientOptions = { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => performance.now();

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const index = Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length));
  return sorted[index];
}

function summary(latencies) {
  const sorted = Float64Array.from(latencies).sort();
  return {
    p50_ms: percentile(sorted, 50),
    p90_ms: percentile(sorted, 90),
    p99_ms: percentile(sorted, 99),
  };
}

function open(url, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, clientOptions);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error("handshake timeout"));
    }, timeoutMs);
    ws.once("open", () => {
      clearTimeout(timer);
      resolve(ws);
    });
    ws.once("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

async function openMany(url, count, inflight) {
  const sockets = [];
  let failures = 0;
  let next = 0;
  async function worker() {
    while (next < count) {
      next += 1;
      try {
        sockets.push(await open(url));
      } catch {
        failures += 1;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(inflight, count) }, worker));
  if (count > 0 && sockets.length === 0) {
    throw new Error(`no connection opened: ${failures} handshakes failed at ${url}`);
  }
  return { sockets, failures };
}

function closeAll(sockets) {
  for (const ws of sockets) ws.terminate();
}

async function echo({ url, connections, seconds, warmup, size, binary }) {
  const payload = binary ? Buffer.alloc(size, 7) : "x".repeat(size);
  const { sockets, failures } = await openMany(url, connections, 100);
  let measuring = false;
  let stopping = false;
  let count = 0;
  let elapsed = 0;
  const latencies = [];
  await Promise.all(
    sockets.map(
      (ws) =>
        new Promise((resolve) => {
          let sentAt = 0;
          const fire = () => {
            if (stopping) return resolve();
            sentAt = now();
            ws.send(payload);
          };
          ws.on("message", () => {
            if (measuring) {
              count += 1;
              latencies.push(now() - sentAt);
            }
            fire();
          });
          ws.on("close", resolve);
          fire();
        }),
    ).concat(
      (async () => {
        await sleep(warmup * 1000);
        measuring = true;
        const started = now();
        await sleep(seconds * 1000);
        measuring = false;
        stopping = true;
        elapsed = (now() - started) / 1000;
      })(),
    ),
  );
  closeAll(sockets);
  return {
    connections: sockets.length,
    failed_handshakes: failures,
    messages_per_s: count / elapsed,
    ...summary(latencies),
  };
}

async function connect({ url, connections, inflight, hold, burstWindow }) {
  const started = now();
  const { sockets, failures } = await openMany(url, connections, inflight);
  const openSeconds = (now() - started) / 1000;
  await sleep(hold * 1000);
  let alive = sockets.filter((ws) => ws.readyState === WebSocket.OPEN);
  let answered = 0;
  let lastAnswer = 0;
  const burstStart = now();
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, burstWindow * 1000);
    for (const ws of alive) {
      ws.once("message", () => {
        answered += 1;
        lastAnswer = now() - burstStart;
        if (answered === alive.length) {
          clearTimeout(timer);
          resolve();
        }
      });
      ws.send("burst");
    }
  });
  closeAll(sockets);
  return {
    connections,
    opened: sockets.length,
    failed_handshakes: failures,
    handshakes_per_s: sockets.length / openSeconds,
    alive_after_hold: alive.length,
    answered_burst: answered,
    burst_seconds: answered ? lastAnswer / 1000 : null,
  };
}

async function broadcast({ url, members, rate, seconds, warmup }) {
  const { sockets, failures } = await openMany(url, members, 100);
  const latencies = [];
  let received = 0;
  const sentAt = new Map();
  for (const ws of sockets) {
    ws.on("message", (data) => {
      const seq = Number(String(data).slice(0, 12));
      const at = sentAt.get(seq);
      if (at !== undefined) {
        received += 1;
        latencies.push(now() - at);
      }
    });
  }
  await sleep(warmup * 1000);
  const total = Math.round(rate * seconds);
  const interval = 1000 / rate;
  const started = now();
  for (let seq = 1; seq <= total; seq += 1) {
    const due = started + seq * interval;
    const wait = due - now();
    if (wait > 0) await sleep(wait);
    sentAt.set(seq, now());
    sockets[0].send(String(seq).padStart(12, "0") + "x".repeat(52));
  }
  await sleep(2000); // let the last messages arrive
  closeAll(sockets);
  const expected = total * sockets.length;
  return {
    members: sockets.length,
    failed_handshakes: failures,
    rate,
    delivered: received,
    expected,
    delivered_ratio: expected ? received / expected : null,
    ...summary(latencies),
  };
}

async function subscribe({ url, connections, query, source, seconds }) {
  const { sockets, failures } = await openMany(url, connections, 100);
  let results = 0;
  let errors = 0;
  for (const ws of sockets) {
    ws.on("message", (data) => {
      const type = JSON.parse(String(data)).type;
      if (type === "results") results += 1;
      else if (type === "error") errors += 1;
    });
    ws.send(JSON.stringify({ type: "search", query, source }));
  }
  await sleep(seconds * 1000);
  closeAll(sockets);
  return { subscribers: sockets.length, failed_handshakes: failures, seconds,
           result_pushes: results, error_pushes: errors };
}

const scenarios = { echo, connect, broadcast, subscribe };
const result = await scenarios[options.scenario](options);
process.stdout.write(JSON.stringify(result) + "\n");
process.exit(0);
