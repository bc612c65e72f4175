#!/usr/bin/env node
// Fills a repo with `count` posts through applyWrites in batches of 200 (one commit per batch).
// Usage: node populate.js <pdsUrl> <identifier> <password> <count>
const { AtpAgent } = require('@atproto/api')

async function main() {
  const [service, identifier, password, countArg] = process.argv.slice(2)
  const count = Number(countArg)
  const agent = new AtpAgent({ service })
  await agent.login({ identifier, password })
  const repo = agent.session.did
  const started = performance.now()
  for (let done = 0; done < count; ) {
    const n = Math.min(200, count - done)
    const writes = Array.from({ length: n }, (_, i) => ({
      $type: 'com.atproto.repo.applyWrites#create',
      collection: 'app.bsky.feed.post',
      value: { $type: 'app.bsky.feed.post', text: `record ${done + i} ${'x'.repeat(80)}`, createdAt: new Date().toISOString() },
    }))
    await agent.com.atproto.repo.applyWrites({ repo, writes })
    done += n
  }
  console.log(JSON.stringify({ records: count, seconds: +((performance.now() - started) / 1000).toFixed(1) }))
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
