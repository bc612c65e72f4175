#!/usr/bin/env node
// Rate limits as an ATProto app meets them through @atproto/api: sign-ins per identifier run
// out with RateLimitExceeded and the ratelimit-* headers, another identifier is unaffected, and
// the limit recovers; repo writes per account run out; a client address behind the trusted
// proxy is counted apart from another.
// Usage: node ratelimit-flow.js <pdsUrl> --handle H --password P --session-limit N
//        --write-points N   (the server's VOW_RATE_LIMIT_SESSION and _WRITES_HOUR counts)
const { AtpAgent } = require('@atproto/api')
const { option, check, steps } = require('./lib')

const args = process.argv.slice(2)
const opt = (name) => option(args, name)
const service = args[0]
const { step, run } = steps()

const outcome = (p) => p.then((res) => ({ ok: true, headers: res.headers }), (e) => ({ ok: false, status: e.status, error: e.error, headers: e.headers || {} }))

async function main() {
  const sessionLimit = Number(opt('--session-limit'))
  const agent = new AtpAgent({ service })
  // Failed sign-ins go through an agent with no session: a signed-in agent answers a 401 by
  // refreshing its session and trying again, which spends another attempt.
  const anon = new AtpAgent({ service })
  await step('sign-ins with a wrong password for one identifier run out with RateLimitExceeded and its headers', async () => {
    let last
    for (let i = 0; i <= sessionLimit; i++) {
      last = await outcome(anon.com.atproto.server.createSession({ identifier: 'nobody.test', password: 'wrong' }))
      if (i < sessionLimit) check(!last.ok && last.status === 401, `attempt ${i}: ${JSON.stringify(last)}`)
    }
    check(last.status === 429 && last.error === 'RateLimitExceeded', `over the limit: ${JSON.stringify(last)}`)
    const h = last.headers
    check(h['ratelimit-limit'] === String(sessionLimit), `limit header: ${JSON.stringify(h)}`)
    check(h['ratelimit-remaining'] === '0', `remaining header: ${JSON.stringify(h)}`)
    check(Number(h['ratelimit-reset']) >= Math.floor(Date.now() / 1000), `reset header: ${JSON.stringify(h)}`)
    check(/^\d+;w=\d+$/.test(h['ratelimit-policy']), `policy header: ${JSON.stringify(h)}`)
  })
  await step('another identifier still signs in, and its answer reports the global limit', async () => {
    const res = await agent.login({ identifier: opt('--handle'), password: opt('--password') })
    check(res.success && Number(res.headers['ratelimit-remaining']) > 0, `signed in: ${JSON.stringify(res.headers)}`)
  })
  await step('the limit recovers: the identifier may try again once its window has moved', async () => {
    for (;;) {
      const r = await outcome(anon.com.atproto.server.createSession({ identifier: 'nobody.test', password: 'wrong' }))
      if (r.status === 401) break
      check(r.status === 429, `while waiting: ${JSON.stringify(r)}`)
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
  })
  await step('repo writes per account run out in points (a create costs 3)', async () => {
    const creates = Math.floor(Number(opt('--write-points')) / 3)
    const did = agent.session.did
    const post = () => agent.com.atproto.repo.createRecord({
      repo: did, collection: 'app.bsky.feed.post',
      record: { $type: 'app.bsky.feed.post', text: 'counted', createdAt: new Date().toISOString() },
    })
    for (let i = 0; i < creates; i++) await post()
    const over = await outcome(post())
    check(over.status === 429 && over.error === 'RateLimitExceeded', `the next write: ${JSON.stringify(over)}`)
    check(over.headers['ratelimit-limit'] === opt('--write-points'), `write limit header: ${JSON.stringify(over.headers)}`)
  })
  await step('behind the trusted proxy, each forwarded client address has its own count', async () => {
    const attempt = (ip) => {
      const a = new AtpAgent({ service })
      a.setHeader('x-forwarded-for', ip)
      return outcome(a.com.atproto.server.createAccount({ handle: `x${Math.random().toString(36).slice(2, 8)}.test`, password: 'p' }))
    }
    let first
    for (let i = 0; i < 10; i++) {
      first = await attempt('203.0.113.7')
      if (first.status === 429) break
    }
    check(first.status === 429 && first.error === 'RateLimitExceeded', `one address runs out of sign-ups: ${JSON.stringify(first)}`)
    const other = await attempt('203.0.113.8')
    check(other.status !== 429, `another address is not limited: ${JSON.stringify(other)}`)
  })
  return {}
}

run(main)
