#!/usr/bin/env node
// createRecord throughput and latency through @atproto/api at a given concurrency.
// Usage: node writes.js <pdsUrl> <identifier> <password> <count> <concurrency>
// Prints one JSON line: {writes, seconds, perSecond, p50Ms, p90Ms, p99Ms}.
const { AtpAgent } = require('@atproto/api')

async function main() {
  const [service, identifier, password, countArg, concArg] = process.argv.slice(2)
  const count = Number(countArg || 200)
  const concurrency = Number(concArg || 4)
  const agent = new AtpAgent({ service })
  await agent.login({ identifier, password })
  const repo = agent.session.did
  const latencies = []
  let next = 0
  // A few writes first so neither side pays for cold caches in the figures.
  for (let i = 0; i < 5; i++) {
    await agent.com.atproto.repo.createRecord({ repo, collection: 'app.bsky.feed.post', record: { $type: 'app.bsky.feed.post', text: `warm ${i}`, createdAt: new Date().toISOString() } })
  }
  const started = performance.now()
  async function worker() {
    while (next < count) {
      const i = next++
      const t = performance.now()
      await agent.com.atproto.repo.createRecord({ repo, collection: 'app.bsky.feed.post', record: { $type: 'app.bsky.feed.post', text: `bench ${i}`, createdAt: new Date().toISOString() } })
      latencies.push(performance.now() - t)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const seconds = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  const q = (p) => +latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(2)
  console.log(JSON.stringify({ writes: count, concurrency, seconds: +seconds.toFixed(2), perSecond: +(count / seconds).toFixed(1), p50Ms: q(0.5), p90Ms: q(0.9), p99Ms: q(0.99) }))
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
