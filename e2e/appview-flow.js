// The Bluesky app's calls through Vow, made with @atproto/api's AtpAgent against the real
// AppView (which indexes Vow's firehose and verifies the service tokens Vow attaches, signed by
// each user's key). Run by crates/vow/tests/appview.rs in phases:
//   live    both signers connected: post, follow, like, reply; timelines, profiles with viewer
//           state, threads, notifications, preferences, a custom feed
//   offline alice's signer stopped: reads go on with stored tokens; a procedure fails with
//           SignerUnavailable; getFeed falls back to the logged-out view; carol (no key) too
//   raw     the AppView no longer indexes: alice's new post and profile show through Vow
// Usage: node appview-flow.js PHASE CONFIG_JSON  -> prints a JSON summary {"ok":true,...}
const { AtpAgent } = require('@atproto/api')

const [phase, configJson] = process.argv.slice(2)
const cfg = JSON.parse(configJson)
const assert = (cond, what) => {
  if (!cond) throw new Error(`assertion failed: ${what}`)
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

async function login(name, proxied) {
  const agent = new AtpAgent({ service: cfg.vow })
  await agent.login({ identifier: cfg[name].handle, password: cfg[name].password })
  if (proxied) {
    // As the Bluesky app does: name the AppView and the labelers on every call.
    agent.configureProxy(`${cfg.appviewDid}#bsky_appview`)
    agent.configureLabelers([cfg.appviewDid])
  }
  return agent
}

// The AppView itself, without a token: to wait until it has indexed something.
async function appview(nsid, params) {
  const res = await fetch(`${cfg.appview}/xrpc/${nsid}?${new URLSearchParams(params)}`)
  return { status: res.status, body: await res.json().catch(() => null) }
}

async function until(what, check) {
  for (let i = 0; i < 600; i++) {
    if (await check()) return
    await sleep(100)
  }
  throw new Error(`timed out waiting for ${what}`)
}

async function failsWith(name, call) {
  try {
    await call()
  } catch (e) {
    assert(e.error === name, `expected ${name}, got ${e.error}: ${e.message}`)
    return e.message
  }
  throw new Error(`expected ${name}, the call succeeded`)
}

async function live() {
  const alice = await login('alice', true)
  const bob = await login('bob', false)

  // Preferences round trip (stored by Vow, not the AppView).
  await alice.addSavedFeeds([{ type: 'timeline', value: 'following', pinned: true }])
  await alice.setContentLabelPref('nudity', 'hide')
  const prefs = await alice.getPreferences()
  assert(prefs.savedFeeds.some((f) => f.value === 'following'), 'saved feed kept')
  assert(prefs.moderationPrefs.labels.nudity === 'hide', 'content label preference kept')

  const bobPost = await bob.post({ text: 'hello from bob', createdAt: new Date().toISOString() })
  await alice.follow(bob.session.did)
  await alice.like(bobPost.uri, bobPost.cid)
  const ref = { uri: bobPost.uri, cid: bobPost.cid }
  const reply = await alice.post({ text: 'hi bob', reply: { root: ref, parent: ref }, createdAt: new Date().toISOString() })
  const own = await alice.post({ text: 'alice was here', createdAt: new Date().toISOString() })

  await until('the AppView to index the thread', async () => {
    const t = await appview('app.bsky.feed.getPostThread', { uri: bobPost.uri })
    return t.status === 200 && (t.body.thread.replies ?? []).some((r) => r.post.uri === reply.uri)
  })
  await until('the AppView to index the follow', async () => {
    const p = await appview('app.bsky.actor.getProfile', { actor: bob.session.did })
    return p.status === 200 && p.body.followersCount === 1
  })

  // Through Vow, with tokens signed by the users' keys.
  const timeline = await alice.getTimeline({ limit: 30 })
  assert(timeline.data.feed.some((i) => i.post.uri === bobPost.uri), 'timeline shows the followed account')
  const feed = await alice.getAuthorFeed({ actor: bob.session.did })
  assert(feed.data.feed[0].post.uri === bobPost.uri, 'author feed')
  assert(feed.data.feed[0].post.viewer.like, 'author feed carries viewer state (the like)')
  const profile = await alice.getProfile({ actor: bob.session.did })
  assert(profile.data.viewer.following, 'profile viewer state: the AppView accepted the token')
  const thread = await alice.getPostThread({ uri: bobPost.uri })
  assert(thread.data.thread.replies.some((r) => r.post.uri === reply.uri), 'thread shows the reply')
  await until('the notifications', async () => {
    const n = await bob.listNotifications()
    const reasons = new Set(n.data.notifications.map((x) => x.reason))
    return ['follow', 'like', 'reply'].every((r) => reasons.has(r))
  })
  const seen = await bob.app.bsky.notification.getUnreadCount()
  assert(seen.data.count >= 3, 'unread count')

  // A custom feed: the AppView asks the generator with a token for it, signed by alice's key.
  const feedUri = `at://${alice.session.did}/app.bsky.feed.generator/vowtest`
  await alice.com.atproto.repo.putRecord({
    repo: alice.session.did,
    collection: 'app.bsky.feed.generator',
    rkey: 'vowtest',
    record: { $type: 'app.bsky.feed.generator', did: cfg.feedgenDid, displayName: 'Vow test', createdAt: new Date().toISOString() },
  })
  await fetch(`${cfg.feedgen}/set?posts=${encodeURIComponent(bobPost.uri)}`)
  await until('the AppView to index the feed generator', async () => {
    return (await appview('app.bsky.feed.getFeedGenerator', { feed: feedUri })).status === 200
  })
  const custom = await alice.app.bsky.feed.getFeed({ feed: feedUri })
  assert(custom.data.feed[0].post.uri === bobPost.uri, 'custom feed hydrated by the AppView')
  assert(custom.data.cursor === `viewer:${alice.session.did}`, `the generator verified alice's token (${custom.data.cursor})`)

  return { bobPost: bobPost.uri, reply: reply.uri, own: own.uri, feedUri }
}

async function offline() {
  const alice = await login('alice', true)
  const timeline = await alice.getTimeline({ limit: 30 })
  assert(timeline.data.feed.some((i) => i.post.uri === cfg.bobPost), 'timeline on a stored token')
  const profile = await alice.getProfile({ actor: cfg.bob.did })
  assert(profile.data.viewer.following, 'viewer state on a stored token')
  await alice.listNotifications()
  const thread = await alice.getPostThread({ uri: cfg.bobPost })
  assert(thread.data.thread.post.uri === cfg.bobPost, 'thread on a stored token')
  const muted = await failsWith('SignerUnavailable', () => alice.mute(cfg.bob.did))
  // The generator's token (60 s, kept until shortly before it expires) may still be there.
  const custom = await alice.app.bsky.feed.getFeed({ feed: cfg.feedUri })
  assert(custom.data.feed[0].post.uri === cfg.bobPost, 'custom feed without a signer')

  // carol never registered a key: optional-auth reads are the logged-out view, the rest refused.
  const carol = await login('carol', false)
  const seenByCarol = await carol.getProfile({ actor: cfg.bob.did })
  assert(seenByCarol.data.did === cfg.bob.did && !seenByCarol.data.viewer?.following, 'logged-out profile view')
  await failsWith('SignerUnavailable', () => carol.getTimeline())
  const carolFeed = await carol.app.bsky.feed.getFeed({ feed: cfg.feedUri })
  assert(carolFeed.data.cursor === 'viewer:anonymous', `getFeed without a token is the logged-out view (${carolFeed.data.cursor})`)
  return { muted }
}

async function raw() {
  const alice = await login('alice', true)
  await alice.upsertProfile((p) => ({ ...(p ?? {}), displayName: 'Alice Fresh' }))
  const fresh = await alice.post({ text: 'written while the AppView is not indexing', createdAt: new Date().toISOString() })
  const direct = await appview('app.bsky.feed.getPostThread', { uri: fresh.uri })
  assert(direct.status !== 200, 'the AppView has not seen the new post')

  const feed = await alice.getAuthorFeed({ actor: alice.session.did })
  assert(feed.data.feed[0].post.uri === fresh.uri, 'own new post first in the author feed')
  assert(feed.data.feed.some((i) => i.post.uri === cfg.own), 'older posts still there')
  const timeline = await alice.getTimeline()
  assert(timeline.data.feed[0].post.uri === fresh.uri, 'own new post first in the timeline')
  const profile = await alice.getProfile({ actor: alice.session.did })
  assert(profile.data.displayName === 'Alice Fresh', `profile shows the new name (${profile.data.displayName})`)
  const thread = await alice.getPostThread({ uri: fresh.uri })
  assert(thread.data.thread.post.uri === fresh.uri, 'thread of the new post')
  return { fresh: fresh.uri }
}

const phases = { live, offline, raw }
phases[phase]()
  .then((out) => console.log(JSON.stringify({ ok: true, phase, ...out })))
  .catch((e) => {
    console.error(e)
    process.exit(1)
  })
