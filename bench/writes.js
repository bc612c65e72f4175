#!/usr/bin/env node
// createRecord throughput and latency through @atproto/api at a given concurrency.
// Usage: node writes.js <pdsUrl> <identifier[,identifier...]> <password> <count> <concurrency>
// With several identifiers (same password), the workers are spread over the accounts in turn:
// 16 workers over 16 accounts is one writer per account.
// Prints one JSON line: {writes, concurrency, accounts, seconds, perSecond, p50Ms, p90Ms, p99Ms}.
const { AtpAgent } = require('@atproto/api')

async function main() {
  const [service, identifiers, password, countArg, concArg] = process.argv.slice(2)
  const count = Number(countArg || 200)
  const concurrency = Number(concArg || 4)
  const agents = []
  for (const identifier of identifiers.split(',')) {
    const agent = new AtpAgent({ service })
    await agent.login({ identifier, password })
    agents.push(agent)
  }
  const write = (agent, text) =>
    agent.com.atproto.repo.createRecord({
      repo: agent.session.did,
      collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text, createdAt: new Date().toISOString() },
    })
  // A few writes first so neither side pays for cold caches in the figures.
  for (const agent of agents) {
    for (let i = 0; i < 3; i++) await write(agent, `warm ${i}`)
  }
  const latencies = []
  let next = 0
  const started = performance.now()
  async function worker(agent) {
    while (next < count) {
      const i = next++
      const t = performance.now()
      await write(agent, `bench ${i}`)
      latencies.push(performance.now() - t)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, (_, i) => worker(agents[i % agents.length])))
  const seconds = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  const q = (p) => +latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))].toFixed(2)
  console.log(JSON.stringify({ writes: count, concurrency, accounts: agents.length, seconds: +seconds.toFixed(2), perSecond: +(count / seconds).toFixed(1), p50Ms: q(0.5), p90Ms: q(0.9), p99Ms: q(0.99) }))
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
