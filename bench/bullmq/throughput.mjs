// BullMQ's enqueue-then-drain of n no-op jobs, as bench/throughput.py measures the others.
// Usage: node throughput.mjs <redis url> <n> <concurrency> <keep|remove>
// Prints one JSON line: {"enqueue": jobs/s, "drain": jobs/s, "rate": jobs/s end to end}.
import { Queue, Worker } from "bullmq";
import { randomBytes } from "node:crypto";

const [url, n, concurrency, completed] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4]), process.argv[5]];
const parsed = new URL(url);
const connection = { host: parsed.hostname, port: Number(parsed.port || 6379), db: Number(parsed.pathname.slice(1) || 0) };
const name = `bench-bullmq-${randomBytes(4).toString("hex")}`;
const queue = new Queue(name, { connection });
const opts = completed === "remove" ? { removeOnComplete: true } : {};

const started = performance.now();
for (let i = 0; i < n; i += 1000) {
  const size = Math.min(1000, n - i);
  await queue.addBulk(Array.from({ length: size }, () => ({ name: "noop", data: { delayMs: 0 }, opts })));
}
const enqueued = performance.now();
let done = 0;
const finished = new Promise((resolve) => {
  const worker = new Worker(name, async () => {}, { connection, concurrency });
  worker.on("completed", () => {
    done += 1;
    if (done === n) resolve(worker);
  });
});
const worker = await finished;
const drained = performance.now();
await worker.close();
await queue.obliterate({ force: true });
await queue.close();
console.log(JSON.stringify({
  enqueue: n / ((enqueued - started) / 1000),
  drain: n / ((drained - enqueued) / 1000),
  rate: n / ((drained - started) / 1000),
}));
