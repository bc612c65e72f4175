#!/usr/bin/env node
// Follows subscribeRepos with @atproto/sync's Firehose in authenticated mode: every #commit's
// signature is checked against the key resolved from the PLC and every op against the event's
// MST proofs. Stops after --ops record operations (or fails after --seconds).
// Usage: node firehose-follow.js <pdsUrl> --plc <plcUrl> --ops N [--cursor C] [--seconds S]
// Prints one JSON line: {ok, events, ops, byType, seqs: [first, last], gaps, errors}. Ops of one
// commit share its seq; the distinct seqs seen must be contiguous.
const { Firehose, MemoryRunner } = require('@atproto/sync')
const { IdResolver } = require('@atproto/identity')

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : dflt
}
const service = (args[0] || '').replace(/^http/, 'ws')
const plcUrl = opt('--plc')
const want = Number(opt('--ops', '1'))
const seconds = Number(opt('--seconds', '60'))
const cursor = opt('--cursor') === undefined ? undefined : Number(opt('--cursor'))
if (!service || !plcUrl) {
  console.error('usage: firehose-follow.js <pdsUrl> --plc <plcUrl> --ops N [--cursor C]')
  process.exit(2)
}

const byType = {}
const errors = []
const seqs = []
let ops = 0
let duplicates = 0
const opKeys = new Set()
let done = false
let fh
async function finish(timedOut) {
  if (done) return
  done = true
  await Promise.race([fh.destroy(), new Promise((r) => setTimeout(r, 2000))])
  // @atproto/sync handles repos in parallel, so events arrive out of seq order across repos;
  // the set of sequence numbers seen must still be contiguous.
  const seen = [...new Set(seqs)].sort((a, b) => a - b)
  let gaps = 0
  for (let i = 1; i < seen.length; i++) if (seen[i] !== seen[i - 1] + 1) gaps++
  const ok = !timedOut && errors.length === 0 && gaps === 0 && duplicates === 0 && ops >= want
  console.log(JSON.stringify({ ok, events: seqs.length, ops, byType, seqs: [seen[0], seen[seen.length - 1]], gaps, duplicates, errors: errors.map(String), timedOut }))
  process.exit(ok ? 0 : 1)
}
// The runner holds the cursor (the plain getCursor option of @atproto/sync 0.1.x is broken).
fh = new Firehose({
  service,
  idResolver: new IdResolver({ plcUrl }),
  unauthenticatedHandles: true,
  runner: new MemoryRunner({ startCursor: cursor }),
  subscriptionReconnectDelay: 500,
  handleEvent: async (evt) => {
    seqs.push(evt.seq)
    byType[evt.event] = (byType[evt.event] || 0) + 1
    if (evt.event === 'create' || evt.event === 'update' || evt.event === 'delete') {
      const key = `${evt.seq} ${evt.uri}`
      if (opKeys.has(key)) duplicates++
      opKeys.add(key)
      ops++
    }
    if (ops >= want) finish(false)
  },
  onError: (err) => {
    if (errors.length < 20) errors.push(`${err.name}: ${err.message}${err.cause ? ' / ' + err.cause : ''}`)
  },
})
setTimeout(() => finish(true), seconds * 1000)
console.error('following')
fh.start()
