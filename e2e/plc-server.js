// Starts the real did:plc directory server (@did-plc/server) with its in-memory database,
// listening on 127.0.0.1 only.
// Usage: node plc-server.js [port] [--data FILE]   (port 0 picks a free one)
// With --data, every operation the directory accepts is appended (and synced) to FILE before
// the client hears it was accepted, and a restart replays FILE into the new directory, so
// DIDs survive restarts; an operation that does not replay stops the start-up, loudly.
// Prints "PLC listening on http://127.0.0.1:<port>" once ready.
const { PlcServer, Database } = require('@did-plc/server')
const http = require('node:http')
const fs = require('node:fs')

const args = process.argv.slice(2)
const dataAt = args.indexOf('--data')
const dataFile = dataAt >= 0 ? args.splice(dataAt, 2)[1] : null
const wanted = Number.parseInt(args[0] ?? '2582', 10)

// The directory itself, on loopback (PlcServer.start() would listen on every interface).
async function startDirectory(port) {
  const server = PlcServer.create({ db: Database.mock(), port })
  const originalListen = server.app.listen.bind(server.app)
  server.app.listen = (p, ...rest) => originalListen(p, '127.0.0.1', ...rest)
  const httpServer = await server.start()
  return { server, port: httpServer.address().port }
}

async function replay(inner, file) {
  if (!fs.existsSync(file)) return 0
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim())
  for (const [i, line] of lines.entries()) {
    const { did, op } = JSON.parse(line)
    const res = await fetch(`http://127.0.0.1:${inner}/${did}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(op),
    })
    if (!res.ok) {
      throw new Error(`${file} line ${i + 1} (${did}) does not replay: ${res.status} ${await res.text()}`)
    }
  }
  return lines.length
}

// A front that forwards everything to the directory and logs the operations it accepts.
function startFront(inner, file, port) {
  const fd = fs.openSync(file, 'a')
  const front = http.createServer((req, res) => {
    const chunks = []
    let size = 0
    req.on('data', (c) => {
      size += c.length
      if (size > 1 << 20) req.destroy()
      else chunks.push(c)
    })
    req.on('end', async () => {
      try {
        const body = Buffer.concat(chunks)
        const headers = { ...req.headers }
        delete headers.host
        delete headers['content-length']
        const answer = await fetch(`http://127.0.0.1:${inner}${req.url}`, {
          method: req.method, headers, body: ['GET', 'HEAD'].includes(req.method) ? undefined : body,
        })
        const out = Buffer.from(await answer.arrayBuffer())
        const did = req.url.match(/^\/(did:plc:[a-z2-7]+)$/)?.[1]
        if (req.method === 'POST' && did && answer.ok) {
          fs.writeSync(fd, JSON.stringify({ did, op: JSON.parse(body.toString('utf8')) }) + '\n')
          fs.fsyncSync(fd)
        }
        // Every header but those that describe the transfer (fetch has undone it).
        const skip = new Set(['content-length', 'content-encoding', 'transfer-encoding', 'connection', 'keep-alive'])
        const out_headers = {}
        answer.headers.forEach((value, name) => { if (!skip.has(name)) out_headers[name] = value })
        res.writeHead(answer.status, out_headers)
        res.end(out)
      } catch (err) {
        res.writeHead(502, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ message: String(err) }))
      }
    })
  })
  return new Promise((resolve) => front.listen(port, '127.0.0.1', () => resolve(front)))
}

async function main() {
  let stop
  if (dataFile) {
    const directory = await startDirectory(0)
    const replayed = await replay(directory.port, dataFile)
    const front = await startFront(directory.port, dataFile, wanted)
    console.log(`PLC replayed ${replayed} operations from ${dataFile}`)
    console.log(`PLC listening on http://127.0.0.1:${front.address().port}`)
    stop = async () => { front.close(); await directory.server.destroy() }
  } else {
    const directory = await startDirectory(wanted)
    console.log(`PLC listening on http://127.0.0.1:${directory.port}`)
    stop = () => directory.server.destroy()
  }
  const exit = async () => { await stop(); process.exit(0) }
  process.on('SIGTERM', exit)
  process.on('SIGINT', exit)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
