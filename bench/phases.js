#!/usr/bin/env node
// The commit path's time split between two scrapes of Vow's /metrics: mean milliseconds per
// commit in each phase of vow_commit_phase_seconds (staging, signing, storing), commits made,
// and requests per commit (group commit).
// Usage: node phases.js <before.txt> <after.txt>   Prints one JSON line.
const fs = require('fs')

function read(file) {
  const values = {}
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = line.match(/^(vow_commit_phase_seconds_(?:sum|count))\{phase="(\w+)"\} (\S+)$/)
    if (m) values[`${m[1]}.${m[2]}`] = Number(m[3])
    const n = line.match(/^(vow_commit_batch_requests_(?:sum|count)|vow_commits_total) (\S+)$/)
    if (n) values[n[1]] = Number(n[2])
  }
  return values
}

const [a, b] = process.argv.slice(2).map(read)
const d = (k) => (b[k] || 0) - (a[k] || 0)
const out = {}
for (const phase of ['staging', 'signing', 'storing']) {
  const count = d(`vow_commit_phase_seconds_count.${phase}`)
  out[`${phase}Ms`] = count ? +((d(`vow_commit_phase_seconds_sum.${phase}`) / count) * 1000).toFixed(3) : null
}
out.commits = d('vow_commits_total')
const batches = d('vow_commit_batch_requests_count')
out.requestsPerCommit = batches ? +(d('vow_commit_batch_requests_sum') / batches).toFixed(2) : 1
console.log(JSON.stringify(out))
